"""REST API for operators: place outbound calls, read calls and taken messages back."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from hotline.admin import placing
from hotline.admin.auth import Principal, principal
from hotline.admin.v1 import (
    COMMON_RESPONSES,
    NOT_FOUND,
    Problem,
    Readable,
    ValidationProblem,
    not_own_number,
)
from hotline.call.message_audio import resolve
from hotline.core.record import TimelineStage, TranscriptTurn
from hotline.errors import TemplateError, UnknownNumber
from hotline.services import Services
from hotline.store import StoredMessage

router = APIRouter(prefix="/api", responses=COMMON_RESPONSES)


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# Every route: who asks (the admin, or one business's key). A business key sees its own
# business only; anything of another tenant answers 404 exactly as if it did not exist.
Caller = Annotated[Principal, Depends(principal)]


class PlaceCallRequest(Readable):
    business: str = Field(description="business slug")
    to: str = Field(pattern=r"^\+[1-9]\d{7,14}$", description="E.164 number to call")
    template: str
    variables: dict[str, str] = Field(default_factory=dict)
    from_number: str | None = Field(default=None, alias="from")


class PlacedCallResponse(BaseModel):
    call_sid: str
    status: str
    business: str
    to: str
    from_number: str = Field(serialization_alias="from")


@router.post("/calls", status_code=201, responses={
    404: {"model": Problem}, 502: {"model": Problem}, 503: {"model": Problem},
    422: {"model": Problem | ValidationProblem,
          "description": "a bad request, an unknown business or template, a missing variable"}})
async def place_call(body: PlaceCallRequest, request: Request,
                     caller: Caller) -> PlacedCallResponse:
    if not caller.may_see(body.business):
        raise HTTPException(status_code=404, detail=f"no business {body.business}")
    business = services_of(request).config.business(body.business)
    if (caller.business is not None and business is not None
            and body.from_number is not None and body.from_number not in business.phone_numbers):
        # A business calls from its own numbers only, never with another tenant's caller id.
        raise HTTPException(status_code=422, detail=f"from {not_own_number(business)}")
    try:
        placed = await placing.place_call(
            services_of(request), business=body.business, to=body.to, template=body.template,
            variables=body.variables, from_number=body.from_number)
    except (UnknownNumber, TemplateError, KeyError) as exc:
        raise HTTPException(status_code=422, detail=str(exc).strip("'\"")) from None
    return PlacedCallResponse(call_sid=placed.call_sid, status=placed.status,
                              business=placed.business_slug, to=placed.to_number,
                              from_number=placed.from_number)


@router.get("/calls/{call_sid}", responses=NOT_FOUND)
async def get_call(call_sid: str, request: Request, caller: Caller) -> dict[str, object]:
    record = await services_of(request).store.get_call(call_sid,
                                                       business_slug=caller.business)
    if record is None or not caller.may_see(record.business_slug):
        raise HTTPException(status_code=404, detail=f"no call {call_sid}")
    return {
        "call_sid": record.call_sid, "business": record.business_slug,
        "direction": record.direction, "from": record.from_number, "to": record.to_number,
        "status": record.status, "outcome": record.outcome or "",
        "started_at": record.started_at.isoformat(),
        "ended_at": record.ended_at.isoformat() if record.ended_at else None,
        "transcript": [vars_of(t) for t in record.transcript],
        "timeline": [vars_of(s) for s in record.timeline],
    }


class MessageResponse(BaseModel):
    id: str = Field(description="stable message id: the call's sid and the message's place")
    business: str = Field(description="business slug; empty when none was matched")
    call_sid: str
    name: str
    phone: str
    message: str
    created_at: datetime
    audio_file: str | None = Field(
        None, description="a recorded voice message's WAV, relative to HOTLINE_DATA_DIR")
    audio_ms: int | None = None
    audio_url: str | None = Field(None, description="where to download the WAV (same token)")


@router.get("/messages")
async def list_messages(
    request: Request,
    caller: Caller,
    business: Annotated[str | None, Query(description="only this business's (slug)")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="how many, newest first")] = 50,
) -> list[MessageResponse]:
    """Messages taken for the businesses, newest first: by the agent (`take_message`), or
    recorded from the caller's voice when the engine could not be had (with `audio_url`).
    A business key lists its own business's only."""
    wanted = business or None
    if caller.business is not None:
        if wanted not in (None, caller.business):
            return []
        wanted = caller.business
    messages = await services_of(request).store.list_messages(wanted, limit)
    return [_message_response(m) for m in messages]


@router.get("/messages/{message_id}/audio", response_class=FileResponse, responses={
    **NOT_FOUND, 200: {"content": {"audio/wav": {}}, "description": "the WAV"}})
async def message_audio(message_id: str, request: Request, caller: Caller) -> FileResponse:
    """A recorded voice message's audio: WAV, 16-bit PCM, 8 kHz, mono."""
    services = services_of(request)
    message = await services.store.get_message(message_id)
    if (message is None or message.audio_file is None
            or not caller.may_see(message.business_slug)):
        raise HTTPException(status_code=404, detail=f"no audio for message {message_id}")
    # The path comes from the store, never the request; still, only the data directory.
    path = resolve(Path(services.settings.data_dir), message.audio_file)
    if path is None or not path.is_file():
        raise HTTPException(status_code=404, detail=f"audio of message {message_id} is missing")
    return FileResponse(path, media_type="audio/wav", filename=path.name)


def _message_response(message: StoredMessage) -> MessageResponse:
    audio_url = (f"/api/messages/{message.message_id}/audio" if message.audio_file
                 else None)
    return MessageResponse(
        id=message.message_id, business=message.business_slug, call_sid=message.call_sid,
        name=message.name, phone=message.phone, message=message.message,
        created_at=message.created_at, audio_file=message.audio_file,
        audio_ms=message.audio_ms, audio_url=audio_url)


def vars_of(obj: TranscriptTurn | TimelineStage) -> dict[str, object]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}
