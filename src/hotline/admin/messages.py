"""/api/v1/messages: the messages (leads) the agent took, with their handled state.

A business key lists and marks its own business's messages only: another tenant's message
answers 404, as one that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from hotline.admin.v1 import (
    COMMON_RESPONSES,
    NOT_FOUND,
    Caller,
    Strict,
    not_found,
    scope,
    services_of,
)
from hotline.store import StoredMessage

router = APIRouter(prefix="/api/v1/messages", tags=["messages"], responses=COMMON_RESPONSES)
MAX_MESSAGES = 500


class MessageOut(BaseModel):
    id: str = Field(description="stable: the call's sid and the message's place in it")
    business: str | None = Field(description="the business's slug; null if none (deleted)")
    call_sid: str
    name: str
    phone: str
    message: str
    created_at: datetime
    handled: bool
    handled_at: datetime | None
    audio_ms: int | None = Field(description="a voice message's length (engine unavailable)")
    audio_url: str | None = Field(description="where to download a voice message's WAV")


class MessagePatch(Strict):
    handled: bool = Field(description="true: handled (dated now); false: to do again")


def message_out(message: StoredMessage) -> MessageOut:
    return MessageOut(
        id=message.message_id, business=message.business_slug or None,
        call_sid=message.call_sid, name=message.name, phone=message.phone,
        message=message.message, created_at=message.created_at,
        handled=message.handled_at is not None, handled_at=message.handled_at,
        audio_ms=message.audio_ms,
        audio_url=(f"/api/messages/{message.message_id}/audio" if message.audio_file
                   else None))


@router.get("")
async def list_messages(
    request: Request,
    caller: Caller,
    business: Annotated[str | None, Query(description="only this business's (slug)")] = None,
    handled: Annotated[bool | None, Query(
        description="true: only the handled; false: only those to do")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_MESSAGES, description="how many")] = 50,
) -> list[MessageOut]:
    """Messages newest first."""
    allowed, wanted = scope(caller, business)
    if not allowed:
        return []
    messages = await services_of(request).store.list_messages(wanted, limit, handled=handled)
    return [message_out(m) for m in messages]


@router.patch("/{message_id}", responses=NOT_FOUND)
async def update_message(message_id: str, body: MessagePatch, request: Request,
                         caller: Caller) -> MessageOut:
    """Mark a message handled, or to do again."""
    message = await services_of(request).store.set_message_handled(
        message_id, body.handled, business_slug=caller.business)
    if message is None:
        raise not_found(f"message {message_id}")
    return message_out(message)
