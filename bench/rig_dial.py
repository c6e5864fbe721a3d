"""The parts of ``bench/call_cps.py --dial`` that are not the node: the caller's SIPp scenario and its audio, the
callee's RCML, the provisioned number, and SIPp's per-second statistics.

The bridged call it drives: SIPp (UAC) INVITEs ``NUMBER`` at the node offering PCMU on a port of the caller's
audio process (``bench/rig_rtp.py``, which plays a tone for the hold time), and sends BYE after the hold time. The
node runs the number's VoiceUrl, ``<Dial><Sip>`` to a SIPp UAS whose ``-rtp_echo`` returns every packet, and
bridges the two legs: the tone crosses to the callee and its echo comes back. With several workers, a kamailio
dispatcher (:func:`dispatcher_config`) in front of the node spreads the INVITEs over the workers' SIP ports.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

from callplane.core.ids import IdSource

__all__ = [
    "NUMBER",
    "dial_rcml",
    "dispatcher_config",
    "max_concurrent",
    "provision",
    "uac_scenario",
]

NUMBER = "+15550100"  # the number the trunk (SIPp) calls; VoiceUrl -> dial_rcml


def dial_rcml(callee_port: int, host: str = "127.0.0.1") -> str:
    """The number's RCML: bridge the caller to the SIPp UAS."""
    return f"<Response><Dial><Sip>sip:callee@{host}:{callee_port}</Sip></Dial></Response>"


def uac_scenario(hold_ms: int) -> str:
    """SIPp UAC: INVITE [service] offering PCMU + telephone-event on the port of its ``-inf`` line (``[field0]``:
    the caller's audio, ``bench/rig_rtp.py``, plays from it), ACK, hold for ``hold_ms`` (from the ACK), BYE."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="bridged caller: tone for {hold_ms} ms, then BYE">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "caller" <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:caller@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [field0] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send><![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "caller" <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      [routes]
      Contact: <sip:caller@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0
    ]]></send>
  <pause milliseconds="{hold_ms}"/>
  <send retrans="500"><![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "caller" <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      [routes]
      Contact: <sip:caller@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0
    ]]></send>
  <recv response="200" crlf="true"/>
  <ResponseTimeRepartition value="10, 20, 50, 100, 200, 500, 1000"/>
</scenario>
"""


async def provision(db_url: str, account: str, token: str, voice_url: str, status_callback: str | None) -> str:
    """Migrate the node's database, create its administrator (as ``serve`` will find it) and provision ``NUMBER``
    with ``voice_url`` (GET). Returns the number's sid."""
    from callplane.core.clock import SystemClock
    from callplane.store import numbers
    from callplane.store.bootstrap import ensure_admin
    from callplane.store.db import Database

    ids = IdSource()
    db = Database(db_url)
    try:
        await db.migrate()
        await ensure_admin(db, ids, SystemClock(), account, token)
        now = datetime.now(UTC)
        sid = ids.phone_number_sid()
        record = numbers.NumberRecord(
            sid=sid,
            account_sid=account,
            date_created=now,
            date_updated=now,
            friendly_name="call_cps --dial",
            phone_number=NUMBER,
            voice_url=voice_url,
            voice_method="GET",
            status_callback=status_callback,
        )
        await numbers.add(db, record)
    finally:
        await db.close()
    return sid


def max_concurrent(stat_path: Path) -> int:
    """The most calls SIPp had up at once, over the rows of its ``-trace_stat`` file (one per ``-fd`` period)."""
    with stat_path.open(newline="") as f:
        rows = [r for r in csv.reader(f, delimiter=";") if r]
    if not rows:
        return 0
    col = rows[0].index("CurrentCall")
    return max((int(r[col]) for r in rows[1:] if len(r) > col and r[col].isdigit()), default=0)


_DISPATCHER_CFG = """#!KAMAILIO
# callplane's bench: a SIP dispatcher spreading new INVITEs round robin over the node's workers (worker i listens on
# the --sip port + i). No Record-Route: in-dialog requests go to the worker that answered (its Contact).
debug=1
log_stderror=yes
fork=yes
children=2
auto_aliases=no
disable_tcp=yes
listen=udp:127.0.0.1:@@PORT@@
mpath="@@MPATH@@"
loadmodule "pv.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "dispatcher.so"
modparam("dispatcher", "list_file", "@@RUNDIR@@/dispatcher.list")
modparam("dispatcher", "ds_ping_interval", 0)

request_route {
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    if (is_method("OPTIONS") && !has_totag()) {
        sl_send_reply("200", "OK");
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            t_relay();
        }
        exit;
    }
    if (has_totag()) {
        # SIPp sends every request to its remote address: in-dialog ones go on to their Request-URI (the worker's
        # Contact), as a dispatcher that adds no Record-Route would never see them from a real phone.
        t_relay();
        exit;
    }
    t_check_trans();
    if (!ds_select_dst("1", "4")) {
        sl_send_reply("503", "No worker");
        exit;
    }
    t_relay();
}
"""


def dispatcher_config(port: int, modules: str, rundir: Path, workers: list[int]) -> Path:
    """Write the dispatcher's kamailio.cfg (listening on ``port``) and its list of worker SIP ports; its path."""
    (rundir / "dispatcher.list").write_text("".join(f"1 sip:127.0.0.1:{w}\n" for w in workers))
    cfg = _DISPATCHER_CFG
    for key, value in {"PORT": str(port), "MPATH": modules, "RUNDIR": str(rundir)}.items():
        cfg = cfg.replace(f"@@{key}@@", value)
    path = rundir / "kamailio.cfg"
    path.write_text(cfg)
    return path
