"""REST API for operators: place outbound calls, read calls and taken messages back."""

from __future__ import annotations

import hmac
from dataclasses import fields
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from pydantic import BaseModel, Field

from hotline.core.record import CallRecord, TimelineStage, TranscriptTurn
from hotline.errors import TemplateError, UnknownNumber
from hotline.services import Services
from hotline.store import StoredMessage
from hotline.telephony.outbound import OutboundCallError

router = APIRouter(prefix="/api")


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def require_token(request: Request,
                  authorization: Annotated[str | None, Header()] = None) -> None:
    """Bearer HOTLINE_API_TOKEN, when one is configured."""
    token = services_of(request).settings.api_token
    if token is None:
        return
    expected = f"Bearer {token.get_secret_value()}"
    if authorization is None or not hmac.compare_digest(authorization.encode(), expected.encode()):
        raise HTTPException(status_code=401, detail="missing or wrong bearer token")


class PlaceCallRequest(BaseModel):
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


@router.post("/calls", status_code=201, dependencies=[Depends(require_token)])
async def place_call(body: PlaceCallRequest, request: Request) -> PlacedCallResponse:
    services = services_of(request)
    if services.drain.draining:
        # The load balancer sends the retry to an instance that is not shutting down.
        raise HTTPException(status_code=503, detail="this instance is shutting down; retry",
                            headers={"Retry-After": "1"})
    try:
        placed = await services.dialer.place(
            business_slug=body.business, to_number=body.to, template=body.template,
            variables=body.variables, from_number=body.from_number)
    except (UnknownNumber, TemplateError, KeyError) as exc:
        raise HTTPException(status_code=422, detail=str(exc).strip("'\"")) from None
    except OutboundCallError as exc:
        raise HTTPException(status_code=502, detail=str(exc)) from None
    services.recorder.submit(CallRecord(
        call_sid=placed.call_sid, business_slug=placed.business_slug, direction="outbound",
        from_number=placed.from_number, to_number=placed.to_number, status=placed.status,
        outcome=None, started_at=datetime.now(UTC), ended_at=None,
        template_name=body.template, variables=body.variables))
    return PlacedCallResponse(call_sid=placed.call_sid, status=placed.status,
                              business=placed.business_slug, to=placed.to_number,
                              from_number=placed.from_number)


@router.get("/calls/{call_sid}", dependencies=[Depends(require_token)])
async def get_call(call_sid: str, request: Request) -> dict[str, object]:
    record = await services_of(request).store.get_call(call_sid)
    if record is None:
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
    business: str = Field(description="business slug; empty when none was matched")
    call_sid: str
    name: str
    phone: str
    message: str
    created_at: datetime


@router.get("/messages", dependencies=[Depends(require_token)])
async def list_messages(
    request: Request,
    business: Annotated[str | None, Query(description="only this business's (slug)")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="how many, newest first")] = 50,
) -> list[MessageResponse]:
    """Messages the agent took (`take_message`), newest first."""
    messages = await services_of(request).store.list_messages(business or None, limit)
    return [_message_response(m) for m in messages]


def _message_response(message: StoredMessage) -> MessageResponse:
    return MessageResponse(
        business=message.business_slug, call_sid=message.call_sid, name=message.name,
        phone=message.phone, message=message.message, created_at=message.created_at)


def vars_of(obj: TranscriptTurn | TimelineStage) -> dict[str, object]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}
