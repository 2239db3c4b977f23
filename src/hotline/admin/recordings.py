"""GET /api/v1/calls/{call_sid}/recording: a call's recording, for the caller's key.

WAV, 16-bit PCM 8 kHz stereo (the caller left, the agent right), its time 0 the call's
(the webhook), served with HTTP range requests (`Accept-Ranges: bytes`, 206 with
`Content-Range`), so a browser's player can seek. Another tenant's call answers 404 as if
it did not exist; a call without a recording, or whose recording the retention sweeper
deleted, answers 404 saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse

from hotline.admin.auth import Principal, principal
from hotline.call.data_files import resolve
from hotline.services import Services

router = APIRouter(prefix="/api/v1/calls", tags=["calls"])
Caller = Annotated[Principal, Depends(principal)]


# HEAD too (FastAPI answers a GET-only route's HEAD with 405): players and download tools
# ask it for the length before they fetch ranges. Not in the schema: the same operation.
@router.head("/{call_sid}/recording", include_in_schema=False)
@router.get("/{call_sid}/recording", response_class=FileResponse, responses={
    200: {"content": {"audio/wav": {}}, "description": "the whole recording"},
    206: {"content": {"audio/wav": {}}, "description": "the range asked for"},
    404: {"description": "no such call (or not yours), no recording, or deleted"},
    416: {"description": "a range outside the file"},
})
async def call_recording(call_sid: str, request: Request, caller: Caller) -> FileResponse:
    services: Services = request.app.state.services
    record = await services.store.get_call(call_sid, business_slug=caller.business)
    if record is None or not caller.may_see(record.business_slug):
        raise HTTPException(status_code=404, detail=f"no call {call_sid}")
    if record.recording_file is None:
        if record.recording_deleted_at is not None:
            when = record.recording_deleted_at.strftime("%Y-%m-%d %H:%M UTC")
            raise HTTPException(status_code=404, detail=(
                f"the recording of call {call_sid} was deleted on {when} "
                "(its business's retention)"))
        raise HTTPException(status_code=404, detail=f"call {call_sid} was not recorded")
    # The path comes from the store, never the request; still, only the data directory.
    path = resolve(Path(services.settings.data_dir), record.recording_file)
    if path is None or not path.is_file():
        raise HTTPException(status_code=404,
                            detail=f"the recording of call {call_sid} is missing")
    return FileResponse(path, media_type="audio/wav", filename=f"{call_sid}.wav",
                        content_disposition_type="inline")
