"""The only place where sip, media, rcml, webhooks and store meet.

``media_session.MediaCalls``: one RTP leg per SIP call; answers/offers SDP with the leg's port, follows re-INVITE
hold/resume, closes the leg when the call ends, and reports RFC 4733, in-band and SIP INFO digits as ``CallDigit``.
"""
