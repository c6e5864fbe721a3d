"""Media plane: RTP legs on one 20 ms clock, G.711, DTMF, sources, sinks and mixing; aio.py owns sockets."""
