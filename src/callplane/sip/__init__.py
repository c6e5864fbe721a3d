"""SIP signalling (RFC 3261): sans-IO messages, transactions, dialogs and UA cores; aio.py adapts to sockets."""
