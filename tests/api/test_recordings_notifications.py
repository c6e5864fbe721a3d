"""Recordings and Notifications through the real API on both databases."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx

from callplane.api.app import create_app
from callplane.core.clock import FakeClock
from callplane.core.ids import IdSource
from callplane.media.recorder import wav_bytes
from callplane.store import notifications, recordings
from callplane.store.notifications import NotificationRecord
from callplane.store.recordings import RecordingRecord
from tests.api.conftest import ADMIN, ADMIN_SID, T0, Api

OTHER_SID = "AC" + "b" * 32
OTHER = (OTHER_SID, "other-token-0123456789")
CALL = "ID" + "1" * 32 + "-CA" + "2" * 32
BASE = f"/2012-04-24/Accounts/{ADMIN_SID}"


async def _client(api: Api, directory: Path) -> httpx.AsyncClient:
    app = create_app(api.db, ids=IdSource(1), clock=FakeClock(wall=T0), recordings_dir=directory)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://callplane.test")


async def _add_recordings(api: Api, directory: Path, n: int) -> list[RecordingRecord]:
    out = []
    for i in range(n):
        rec = RecordingRecord(
            sid=f"RE{i:032x}",
            account_sid=ADMIN_SID,
            call_sid=CALL if i % 2 == 0 else "CAother",
            date_created=T0 + timedelta(seconds=i),
            duration_ms=1500 + i,
            file=f"RE{i:032x}.wav",
        )
        (directory / rec.file).write_bytes(wav_bytes(b"\x01\x00" * 800))
        await recordings.add(api.db, rec)
        out.append(rec)
    return out


async def test_recordings_list_get_audio_delete(api: Api, tmp_path: Path) -> None:
    recs = await _add_recordings(api, tmp_path, 3)
    async with await _client(api, tmp_path) as client:
        listing = (await client.get(f"{BASE}/Recordings.json?PageSize=2", auth=ADMIN)).json()
        assert (listing["total"], listing["num_pages"], listing["page_size"]) == (3, 1, 2)
        assert [r["sid"] for r in listing["recordings"]] == [recs[2].sid, recs[1].sid]
        assert listing["next_page_uri"] == f"{BASE}/Recordings?Page=1&PageSize=2&AfterSid={recs[1].sid}&Limit=10000"
        first = listing["recordings"][0]
        assert first == {
            "sid": recs[2].sid,
            "date_created": "Thu, 1 Jan 2026 00:00:02 +0000",
            "date_updated": "Thu, 1 Jan 2026 00:00:02 +0000",
            "account_sid": ADMIN_SID,
            "call_sid": CALL,
            "duration": "1.5",
            "api_version": "2012-04-24",
            "file_uri": f"http://callplane.test{BASE}/Recordings/{recs[2].sid}.wav",
            "uri": f"{BASE}/Recordings/{recs[2].sid}.json",
        }
        by_call = (await client.get(f"{BASE}/Calls/{CALL}/Recordings.json", auth=ADMIN)).json()
        assert [r["sid"] for r in by_call["recordings"]] == [recs[2].sid, recs[0].sid]

        audio = await client.get(f"{BASE}/Recordings/{recs[0].sid}.wav", auth=ADMIN)
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        assert audio.content[:4] == b"RIFF" and audio.content[8:12] == b"WAVE"
        accept = await client.get(f"{BASE}/Recordings/{recs[0].sid}", auth=ADMIN, headers={"Accept": "audio/wav"})
        assert accept.content == audio.content
        xml = await client.get(f"{BASE}/Recordings/{recs[0].sid}", auth=ADMIN)
        assert xml.headers["content-type"] == "application/xml"
        assert f"<Sid>{recs[0].sid}</Sid>" in xml.text and "<Duration>1.5</Duration>" in xml.text

        assert (await client.get(f"{BASE}/Recordings/{recs[0].sid}.wav")).status_code == 401
        gone = await client.delete(f"{BASE}/Recordings/{recs[0].sid}.json", auth=ADMIN)
        assert gone.status_code == 204
        assert not (tmp_path / recs[0].file).exists()
        assert (await client.get(f"{BASE}/Recordings/{recs[0].sid}.json", auth=ADMIN)).status_code == 404


async def test_recordings_of_another_account_are_not_visible(api: Api, tmp_path: Path) -> None:
    recs = await _add_recordings(api, tmp_path, 1)
    await api.add_account(OTHER_SID, OTHER[1])
    async with await _client(api, tmp_path) as client:
        other_base = f"/2012-04-24/Accounts/{OTHER_SID}"
        r = await client.get(f"{other_base}/Recordings/{recs[0].sid}.json", auth=OTHER)
        assert r.status_code == 404
        assert (await client.get(f"{BASE}/Recordings.json", auth=OTHER)).status_code == 403
        assert (await client.delete(f"{other_base}/Recordings/{recs[0].sid}", auth=OTHER)).status_code == 404
    assert (tmp_path / recs[0].file).exists()


async def test_notifications_list_and_get(api: Api) -> None:
    n = NotificationRecord(
        sid="NO" + "3" * 32,
        account_sid=ADMIN_SID,
        call_sid=CALL,
        date_created=T0,
        log=notifications.ERROR,
        error_code=11200,
        message_text="POST http://127.0.0.1:9/rcml: HTTP 500",
        request_url="http://127.0.0.1:9/rcml",
        request_method="POST",
    )
    await notifications.add(api.db, n)
    listing = (await api.client.get(f"{BASE}/Notifications.json", auth=ADMIN)).json()
    assert listing["total"] == 1
    (item,) = listing["notifications"]
    assert item["error_code"] == 11200
    assert item["message_text"] == "POST http://127.0.0.1:9/rcml: HTTP 500"
    assert item["call_sid"] == CALL and item["log"] == 0
    assert item["uri"] == f"{BASE}/Notifications/{n.sid}.json"
    by_call = (await api.client.get(f"{BASE}/Calls/{CALL}/Notifications.json", auth=ADMIN)).json()
    assert by_call["total"] == 1
    one = await api.client.get(f"{BASE}/Notifications/{n.sid}.json", auth=ADMIN)
    assert one.json()["request_method"] == "POST"
    assert (await api.client.get(f"{BASE}/Notifications/NO{'0' * 32}.json", auth=ADMIN)).status_code == 404
