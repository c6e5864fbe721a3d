"""The Recordings resource: list, metadata, the audio itself, and delete (issue 8; restcomm-behaviour §6).

The audio is served with the account's credentials (Restcomm served it unauthenticated): ``…/Recordings/{sid}.wav``,
or the metadata path with ``Accept: audio/wav``. DELETE removes the row and the file.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from callplane.store import recordings as store_recordings
from callplane.store.db import Database
from callplane.store.listing import ListQuery
from callplane.store.recordings import RecordingRecord

from .auth import Authenticator
from .errors import not_found
from .formats import API_VERSION, rfc2822, xml_element, xml_fields
from .listing import list_response, render_one


def _uri(r: RecordingRecord) -> str:
    return f"/{API_VERSION}/Accounts/{r.account_sid}/Recordings/{r.sid}"


def _fields(r: RecordingRecord, base_url: str) -> list[tuple[str, object]]:
    date = rfc2822(r.date_created)
    return [
        ("sid", r.sid),
        ("date_created", date),
        ("date_updated", date),
        ("account_sid", r.account_sid),
        ("call_sid", r.call_sid),
        ("duration", f"{r.duration_ms / 1000:.1f}"),
        ("api_version", r.api_version),
        ("file_uri", base_url.rstrip("/") + _uri(r) + ".wav"),
    ]


def recording_json(r: RecordingRecord, base_url: str) -> dict[str, object]:
    out: dict[str, object] = dict(_fields(r, base_url))
    out["uri"] = _uri(r) + ".json"
    return out


def recording_xml(r: RecordingRecord, base_url: str) -> str:
    fields = xml_fields(_fields(r, base_url))
    return xml_element("Recording", [*fields, ("Uri", _uri(r))])


def build_router(db: Database, auth: Authenticator, directory: Path | None) -> APIRouter:
    router = APIRouter(tags=["Recordings"])

    async def listing(request: Request, account_sid: str, call_sid: str | None) -> Response:
        async def fetch(account: str, query: ListQuery, call: str | None) -> tuple[int, list[RecordingRecord]]:
            return await store_recordings.list_page(db, account, query, call_sid=call)

        base_url = str(request.base_url)
        return await list_response(
            request,
            auth,
            account_sid,
            call_sid,
            resource="Recordings",
            fetch=fetch,
            sid=lambda r: r.sid,
            as_json=lambda r: recording_json(r, base_url),
            as_xml=lambda r: recording_xml(r, base_url),
        )

    async def lookup(request: Request, account_sid: str, sid: str) -> RecordingRecord:
        _, account = await auth.authorize(request, account_sid)
        rec = await store_recordings.get(db, sid)
        if rec is None or rec.account_sid != account.sid:
            raise not_found(f"Recording {sid} was not found in account {account.sid}")
        return rec

    @router.get("/Accounts/{AccountSid}/Recordings", summary="List recordings")
    async def list_recordings(request: Request, AccountSid: str) -> Response:  # noqa: N803
        return await listing(request, AccountSid, None)

    @router.get("/Accounts/{AccountSid}/Calls/{CallSid}/Recordings", summary="List a call's recordings")
    async def list_call_recordings(request: Request, AccountSid: str, CallSid: str) -> Response:  # noqa: N803
        return await listing(request, AccountSid, CallSid)

    @router.get("/Accounts/{AccountSid}/Recordings/{RecordingSid}", summary="Get a recording (metadata or audio)")
    async def get_recording(request: Request, AccountSid: str, RecordingSid: str) -> Response:  # noqa: N803
        audio = RecordingSid.endswith(".wav") or "audio/" in request.headers.get("accept", "")
        rec = await lookup(request, AccountSid, RecordingSid.removesuffix(".wav"))
        if audio:
            if directory is None:
                raise not_found(f"Recording {rec.sid} has no audio on this node")
            try:
                data = await asyncio.to_thread((directory / rec.file).read_bytes)
            except OSError:
                raise not_found(f"The audio of recording {rec.sid} is missing") from None
            return Response(data, media_type="audio/wav")
        base = str(request.base_url)
        return render_one(request, rec, lambda r: recording_json(r, base), lambda r: recording_xml(r, base))

    @router.delete("/Accounts/{AccountSid}/Recordings/{RecordingSid}", summary="Delete a recording and its audio")
    async def delete_recording(request: Request, AccountSid: str, RecordingSid: str) -> Response:  # noqa: N803
        rec = await lookup(request, AccountSid, RecordingSid.removesuffix(".wav"))
        await store_recordings.remove(db, rec.sid)
        if directory is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread((directory / rec.file).unlink)
        return Response(status_code=204)

    return router
