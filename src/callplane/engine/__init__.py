"""The only place where sip, media, rcml, webhooks and store meet."""
