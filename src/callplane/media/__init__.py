"""Media plane: RTP legs on one 20 ms clock, G.711, DTMF, sources, sinks and mixing; aio.py owns sockets.

Engine-facing API (``callplane.media.aio.MediaEngine``; everything else is sans-IO and takes ``now``)::

    media = MediaEngine(host="127.0.0.1", port_range=settings.rtp_port_range, ids=ids,
                        on_event=callback,           # or read media.events (an asyncio.Queue)
                        idle_timeout=30.0)           # RTP timeout -> LegIdle
    await media.start()                              # starts THE 20 ms ticker
    leg_id, port = media.create_leg(payload_type=0, dtmf_payload_type=101)   # port goes into our SDP
    media.set_remote(leg_id, host, port, payload_type=8, dtmf_payload_type=101)  # from the peer's SDP
    media.set_source(leg_id, source)                 # any sources.Source (tone, PcmSource, player, TTS, playlist)
    media.add_sink(leg_id, sink)                     # any sources.Sink (write(frame, now))
    media.record(leg_id, path, Recorder(max_length_s=..., silence_timeout_s=..., finish_on_key="#"))
    media.stop_recording(leg_id)
    media.record_bridge(a, b, path, Recorder(max_length_s=...))   # two channels: a's peer left, b's right;
                                                     # ends on max length, stop_recording(a), or a leg closing
    media.leg(leg_id).enable_inband_dtmf()           # Goertzel detector for peers without RFC 4733
    media.send_digits(leg_id, "1234w#")              # RFC 4733, paced by the ticker; then DigitsSent
    media.bridge(a, b); media.unbridge(a)           # each hears the other; RFC 4733 digits are relayed too;
                                                     # same codec and nobody listening: packets relayed undecoded
    media.conference("room", music=lambda: ToneSource(...))   # optional, before join: hold music
    media.join("room", leg_id, muted=False, beep=True); media.leave("room", leg_id)
    media.mute(leg_id, True)                         # not heard by the bridge/conference
    media.hold(leg_id, True, music=source)           # in a bridge: hears music; in a conference: its music
    media.close_leg(leg_id)                          # RTCP BYE, sockets and port released
    await media.close()

Events (``events.py``, frozen values): ``DigitReceived(leg_id, digit, duration_ms, method)``,
``DigitsSent``, ``LegIdle``, ``LegFailed(leg_id, reason)`` (a fault in that leg's work closed it; the others go
on), ``SourceFinished`` (the leg's source returned None; silence follows),
``RecordingFinished(leg_id, reason, duration_s, digit, path)`` (after the WAV is written off the loop),
``RemoteLatched`` (symmetric RTP moved the remote address: only inside the latch window after ``set_remote``;
packets from any other source are dropped and counted in ``RtpLeg.foreign_packets``, or dropped by the kernel once
the socket is pinned to a peer that speaks from its SDP address: see ``aio``).

Modules: ``sources`` (Source/Sink protocol, silence, tone, PCM), ``rtp``/``rtcp`` (RFC 3550 packets),
``g711``, ``jitter`` (adaptive reorder buffer), ``dtmf`` (RFC 4733 send/receive, Goertzel), ``energy``, ``recorder``,
``leg`` (one RTP session), ``bridge``, ``mixer`` (conference mix-minus), ``core`` (all legs, one ``tick``),
``ticker`` (the 20 ms schedule and task), ``aio`` (sockets, ports, ``MediaEngine``). Playback, TTS, playlists
and the off-loop workers live in ``player``, ``tts``, ``playlist``, ``httpcache`` and ``workers``.
"""
