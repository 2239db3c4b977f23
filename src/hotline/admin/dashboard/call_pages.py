"""The calls: the list (live calls on top, polled; filters; older pages by cursor) and one
call (transcript, recording, latency waterfall, tool calls, outcome).

A business key sees its own business's calls only: another's answers the 404 page, as a
call that does not exist.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from starlette.responses import FileResponse, Response

from hotline.admin.dashboard import charts
from hotline.admin.dashboard.web import FragmentViewer, Page, Viewer
from hotline.call.message_audio import resolve
from hotline.core.outcomes import Outcome
from hotline.store.call_views import CallDirection, CallQuery, CallView, InvalidCursor

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 25
LIVE_POLL_MS = 2000
RTL_LANGUAGES = frozenset({"he", "iw", "ar", "fa", "ur", "yi"})


@dataclass(frozen=True, slots=True)
class LiveCall:
    call_sid: str
    business_slug: str
    direction: str
    number: str  # the other party's
    seconds: int  # since the webhook


@dataclass(frozen=True, slots=True)
class Filters:
    """The list's filters as the form sent them (kept as typed, to show them again)."""

    business: str = ""
    direction: str = ""
    outcome: str = ""
    day_from: str = ""
    day_to: str = ""
    text: str = ""

    def query(self, page: Page) -> CallQuery:
        business = page.session.business if not page.is_admin else (self.business or None)
        zone = _zone(page, business)
        return CallQuery(
            business_slug=business,
            direction=_direction(self.direction),
            outcome=self.outcome or None,
            started_from=_day_start(self.day_from, zone, 0),
            started_to=_day_start(self.day_to, zone, 1),
            text=self.text.strip() or None)

    def link(self, cursor: str) -> str:
        values = {"business": self.business, "direction": self.direction,
                  "outcome": self.outcome, "from": self.day_from, "to": self.day_to,
                  "q": self.text, "cursor": cursor}
        return "/calls?" + urlencode({k: v for k, v in values.items() if v})


@router.get("/calls")
async def calls(page: Viewer, business: str = "", direction: str = "", outcome: str = "",
                q: str = "", cursor: str = "") -> Response:
    request = page.request
    filters = Filters(business=business, direction=direction, outcome=outcome,
                      day_from=request.query_params.get("from", ""),
                      day_to=request.query_params.get("to", ""), text=q)
    try:
        found = await page.services.store.search_calls(
            filters.query(page), limit=PAGE_SIZE, cursor=cursor or None)
    except InvalidCursor:
        raise page.not_found() from None
    businesses = {b.slug: b for b in page.services.config.businesses()}
    return page.render(
        "calls.html", filters=filters, calls=found.calls, businesses=businesses,
        next_link=filters.link(found.next_cursor) if found.next_cursor else None,
        outcomes=list(Outcome), directions=list(CallDirection), live=live_calls(page),
        poll_ms=LIVE_POLL_MS, filters_paged=bool(cursor))


@router.get("/calls/live")
async def live(page: FragmentViewer) -> Response:
    """The live calls, alone: what the list page polls."""
    businesses = {b.slug: b for b in page.services.config.businesses()}
    return page.render("_live.html", live=live_calls(page), businesses=businesses)


def live_calls(page: Page) -> list[LiveCall]:
    """The calls this instance is running now, newest first, that the viewer may see."""
    now_ms = time.time() * 1000
    found = []
    for call_sid, runner in list(page.services.active_calls.items()):
        plan = runner.plan
        if not page.principal.may_see(plan.business_slug):
            continue
        number = plan.from_number if plan.direction == "inbound" else plan.to_number
        found.append(LiveCall(call_sid, plan.business_slug, plan.direction, number,
                              max(0, int((now_ms - plan.webhook_received_epoch_ms) / 1000))))
    return sorted(found, key=lambda call: call.seconds)


async def visible_call(page: Page, call_sid: str) -> CallView:
    view = await page.services.store.call_view(call_sid)
    if view is None or not page.principal.may_see(view.record.business_slug):
        raise page.not_found()
    return view


@router.get("/calls/{call_sid}")
async def call(page: Viewer, call_sid: str) -> Response:
    view = await visible_call(page, call_sid)
    record = view.record
    business = page.services.config.business(record.business_slug)
    stream_start_ms = next((s.ms for s in record.timeline if s.stage == "stream_start"), 0.0)
    recording = view.recording
    return page.render(
        "call.html", view=view, record=record, business=business,
        language=business.language if business is not None else "",
        timezone=business.timezone if business is not None else "UTC",
        waterfall=charts.waterfall(record.timeline),
        stream_start_ms=stream_start_ms,
        has_recording=recording is not None and recording.file is not None,
        transcript_dir=text_direction(business.language if business is not None else ""))


@router.get("/calls/{call_sid}/recording")
async def recording(page: Viewer, call_sid: str) -> Response:
    """The call's recording (WAV) for the page's player; range requests let it seek."""
    view = await visible_call(page, call_sid)
    if view.recording is None or view.recording.file is None:
        raise page.not_found()
    # The path comes from the store, never the request; still, only the data directory.
    path = resolve(Path(page.services.settings.data_dir), view.recording.file)
    if path is None or not path.is_file():
        raise page.not_found()
    return FileResponse(path, media_type="audio/wav")


def text_direction(language: str) -> str:
    """The direction of a business's language ("auto" when we cannot tell): the transcript
    is laid out in it, and each turn still finds its own (`dir="auto"`)."""
    primary = language.split("-")[0].lower()
    if primary in RTL_LANGUAGES:
        return "rtl"
    return "ltr" if primary else "auto"


def _zone(page: Page, business: str | None) -> ZoneInfo:
    config = page.services.config.business(business) if business else None
    try:
        return ZoneInfo(config.timezone if config is not None else "UTC")
    except (ValueError, KeyError):
        return ZoneInfo("UTC")


def _day_start(value: str, zone: ZoneInfo, plus_days: int) -> datetime | None:
    """Midnight of the day (plus some days) in the zone, as UTC; None for no valid day."""
    try:
        day = date.fromisoformat(value) + timedelta(days=plus_days)
    except ValueError:
        return None
    return datetime.combine(day, clock_time(), zone).astimezone(UTC)


def _direction(value: str) -> CallDirection | None:
    try:
        return CallDirection(value) if value else None
    except ValueError:
        return None
