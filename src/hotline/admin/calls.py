"""/api/v1/calls: place an outbound call, search the calls, read one call whole.

A business key places, lists and reads its own business's calls only: another tenant's
call answers 404, and a list filtered on another business is empty, exactly as for one
that does not exist. The search pages with an opaque cursor (`next_cursor`), newest first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from hotline.admin import placing
from hotline.admin.auth import Principal
from hotline.admin.v1 import (
    COMMON_RESPONSES,
    NOT_FOUND,
    Caller,
    Problem,
    Strict,
    invalid,
    not_found,
    not_own_number,
    scope,
    services_of,
    utc,
)
from hotline.business import BusinessConfig
from hotline.core.greeting_path import GreetingPath
from hotline.core.outcomes import Outcome
from hotline.errors import InvalidBusiness, TemplateError, UnknownNumber
from hotline.store import CallDirection, CallQuery, CallView, InvalidCursor
from hotline.store.call_views import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from hotline.store.validation import check_greeting_template, check_phone_number

router = APIRouter(prefix="/api/v1/calls", tags=["calls"], responses=COMMON_RESPONSES)
E164 = r"^\+[1-9]\d{7,14}$"


# -- placing ----------------------------------------------------------------------------------
class PlaceCall(Strict):
    business: str = Field(description="the business's slug")
    to: str = Field(description="E.164 number to call, e.g. +14155550100")
    template: str = Field(description="the name of one of the business's templates")
    variables: dict[str, str] = Field(
        default_factory=dict, description="a value for each of the template's placeholders")
    from_number: str | None = Field(
        None, alias="from", description="E.164 caller id; default: the business's first number")


class PlacedCall(BaseModel):
    call_sid: str
    status: str
    business: str
    to: str
    from_number: str = Field(serialization_alias="from")


def _errors_at(errors: list[tuple[list[str | int], str]], field: str) -> bool:
    return any(loc == ["body", field] for loc, _ in errors)


def _check_placing(body: PlaceCall, business: BusinessConfig, caller: Principal) -> None:
    """Everything the dialer would refuse, as a 422 naming the field, before dialling."""
    errors: list[tuple[list[str | int], str]] = []
    for field, number in (("to", body.to), ("from", body.from_number)):
        if number is not None:
            try:
                check_phone_number(number, field)
            except InvalidBusiness as exc:
                errors.append((["body", field], str(exc).partition(": ")[2]))
    if (caller.business is not None and body.from_number is not None
            and not _errors_at(errors, "from")
            and body.from_number not in business.phone_numbers):
        # A business calls from its own numbers only, never with another tenant's caller id.
        errors.append((["body", "from"], not_own_number(business)))
    template = next((t for t in business.templates if t.name == body.template), None)
    if template is None:
        known = ", ".join(t.name for t in business.templates) or "none"
        errors.append((["body", "template"],
                       f"business {business.slug} has no template {body.template!r} "
                       f"(known: {known})"))
    else:
        needed = dict.fromkeys((*check_greeting_template(template.greeting_template),
                                *check_greeting_template(template.voicemail_template)))
        missing = [name for name in needed if name not in body.variables]
        if missing:
            errors.append((["body", "variables"],
                           f"template {template.name!r} has placeholders no variable fills: "
                           f"{', '.join(missing)}"))
    if errors:
        raise invalid(*errors)


@router.post("", status_code=201, responses={
    **NOT_FOUND,
    502: {"model": Problem, "description": "Twilio refused to place the call"},
    503: {"model": Problem, "description": "this instance is shutting down; retry"}})
async def place_call(body: PlaceCall, request: Request, caller: Caller) -> PlacedCall:
    """Dial `to` for the business with one of its templates; the call is then read back
    with GET /api/v1/calls/{call_sid}."""
    services = services_of(request)
    business = (services.config.business(body.business) if caller.may_see(body.business)
                else None)
    if business is None:
        raise not_found(f"business {body.business}")
    _check_placing(body, business, caller)
    try:
        placed = await placing.place_call(
            services, business=business.slug, to=check_phone_number(body.to),
            template=body.template, variables=body.variables,
            from_number=(None if body.from_number is None
                         else check_phone_number(body.from_number)))
    except UnknownNumber:  # the business or its template went meanwhile
        raise not_found(f"business {body.business}") from None
    except (TemplateError, KeyError) as exc:
        raise invalid((["body", "template"], str(exc).strip("'\""))) from None
    return PlacedCall(call_sid=placed.call_sid, status=placed.status,
                      business=placed.business_slug, to=placed.to_number,
                      from_number=placed.from_number)


# -- reading ----------------------------------------------------------------------------------
class RecordingOut(BaseModel):
    url: str | None = Field(description="where to download the WAV (same key); null once "
                                        "deleted")
    ms: int | None
    deleted_at: datetime | None = Field(description="when the retention sweeper deleted it")


class CallSummary(BaseModel):
    call_sid: str
    business: str | None = Field(description="the business's slug; null if none (deleted)")
    direction: CallDirection | None = Field(description="null: known from a status callback "
                                                        "only")
    from_number: str = Field(serialization_alias="from")
    to: str
    status: str
    outcome: Outcome | None = Field(description="null: not known yet (ringing, in progress)")
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    template: str | None
    greeting_path: GreetingPath | None
    greeting_ms: float | None = Field(
        description="stream start to the greeting's first audio to the caller")
    recording: RecordingOut | None


class TurnOut(BaseModel):
    speaker: str
    text: str
    started_ms: int = Field(description="ms since the webhook arrived")
    ended_ms: int
    interrupted: bool


class StageOut(BaseModel):
    stage: str
    ms: float = Field(description="ms since the webhook arrived")
    detail: str


class ToolCallOut(BaseModel):
    name: str
    arguments: str | None = Field(description="the JSON the model sent; null: not recorded")
    result: str | None = Field(description="the tool's answer (JSON); null: none recorded")
    error: bool | None = Field(description="null: the tool never answered")
    at: datetime
    at_ms: float = Field(description="ms since the webhook arrived")


class CallDetail(CallSummary):
    variables: dict[str, str]
    transcript: list[TurnOut]
    timeline: list[StageOut]
    tool_calls: list[ToolCallOut]


class CallList(BaseModel):
    calls: list[CallSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: "
                                                "this is the last")


def _summary_fields(view: CallView) -> dict[str, Any]:
    record = view.record
    recording = view.recording
    return {
        "call_sid": record.call_sid, "business": record.business_slug or None,
        "direction": record.direction or None, "from_number": record.from_number,
        "to": record.to_number, "status": record.status, "outcome": record.outcome,
        "started_at": record.started_at, "ended_at": record.ended_at,
        "duration_s": view.duration_s, "template": record.template_name,
        "greeting_path": view.greeting_path, "greeting_ms": view.greeting_ms,
        "recording": None if recording is None else RecordingOut(
            url=(f"/api/v1/calls/{record.call_sid}/recording" if recording.file else None),
            ms=recording.ms, deleted_at=recording.deleted_at),
    }


@router.get("", responses={422: {"description": "a bad filter or cursor"}})
async def list_calls(
    request: Request,
    caller: Caller,
    business: Annotated[str | None, Query(description="only this business's (slug)")] = None,
    direction: CallDirection | None = None,
    outcome: Outcome | None = None,
    started_from: Annotated[datetime | None, Query(
        alias="from", description="started at or after (no offset: UTC)")] = None,
    started_to: Annotated[datetime | None, Query(
        alias="to", description="started before (no offset: UTC)")] = None,
    q: Annotated[str | None, Query(max_length=200, description=(
        "text in the transcript: any turn, case-insensitive"))] = None,
    cursor: Annotated[str | None, Query(max_length=200, description=(
        "the `next_cursor` of the page before"))] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> CallList:
    """Calls newest first, a page at a time; filters combine."""
    allowed, wanted = scope(caller, business)
    if not allowed:
        return CallList(calls=[], next_cursor=None)
    query = CallQuery(business_slug=wanted, direction=direction,
                      outcome=None if outcome is None else outcome.value,
                      started_from=utc(started_from, "from"), started_to=utc(started_to, "to"),
                      text=q or None)
    try:
        page = await services_of(request).store.search_calls(query, cursor=cursor, limit=limit)
    except InvalidCursor as exc:
        raise invalid((["query", "cursor"], str(exc))) from None
    return CallList(calls=[CallSummary(**_summary_fields(v)) for v in page.calls],
                    next_cursor=page.next_cursor)


@router.get("/{call_sid}", responses=NOT_FOUND)
async def get_call(call_sid: str, request: Request, caller: Caller) -> CallDetail:
    """The call with its transcript, latency timeline, tool calls and recording."""
    view = await services_of(request).store.call_view(call_sid,
                                                      business_slug=caller.business)
    if view is None or not caller.may_see(view.record.business_slug):
        raise HTTPException(status_code=404, detail=f"no call {call_sid}")
    record = view.record
    return CallDetail(
        **_summary_fields(view), variables=record.variables,
        transcript=[TurnOut(speaker=t.speaker, text=t.text, started_ms=t.started_ms,
                            ended_ms=t.ended_ms, interrupted=t.interrupted)
                    for t in record.transcript],
        timeline=[StageOut(stage=s.stage, ms=s.ms, detail=s.detail) for s in record.timeline],
        tool_calls=[ToolCallOut(name=t.name, arguments=t.arguments, result=t.result,
                                error=t.error, at=t.at, at_ms=t.at_ms)
                    for t in view.tool_calls])
