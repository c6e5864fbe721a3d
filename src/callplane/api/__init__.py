"""The Restcomm 2012-04-24 HTTP API."""
