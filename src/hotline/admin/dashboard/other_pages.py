"""The messages the agent took (leads, each marked handled with one click) and a business's
stats (calls per day, greeting latency by path, outcomes), as server-drawn SVG charts."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from starlette.responses import FileResponse, Response

from hotline.admin.dashboard import charts
from hotline.admin.dashboard.web import Page, Viewer, form_of
from hotline.call.message_audio import resolve

router = APIRouter(include_in_schema=False)
MESSAGES_SHOWN = 200
STATS_DAYS = (7, 30, 90)


def _business_choice(page: Page, asked: str) -> str | None:
    """The business a page is about: a business key's own; for the admin, the one asked
    for (None: all, where a page allows it)."""
    if not page.is_admin:
        return page.session.business
    return asked or None


@router.get("/messages")
async def messages(page: Viewer, business: str = "", show: str = "todo") -> Response:
    slug = _business_choice(page, business)
    handled = {"todo": False, "done": True}.get(show)
    found = await page.services.store.list_messages(slug, MESSAGES_SHOWN, handled=handled)
    businesses = {b.slug: b for b in page.services.config.businesses()}
    return page.render("messages.html", messages=found, show=show if handled is not None
                       else "all", business=business, businesses=businesses)


@router.post("/messages/{message_id}/handled")
async def mark_handled(page: Viewer, message_id: str) -> Response:
    form = await form_of(page)
    handled = form.get("handled") == "1"
    marked = await page.services.store.set_message_handled(
        message_id, handled, business_slug=None if page.is_admin else page.session.business)
    if marked is None:
        raise page.not_found()
    back = {key: str(form.get(key, "")) for key in ("show", "business") if form.get(key)}
    return page.redirect("/messages" + (f"?{urlencode(back)}" if back else ""))


@router.get("/messages/{message_id}/audio")
async def message_audio(page: Viewer, message_id: str) -> Response:
    """A voice message's recording, for the page's player."""
    services = page.services
    message = await services.store.get_message(message_id)
    if message is None or message.audio_file is None \
            or not page.principal.may_see(message.business_slug):
        raise page.not_found()
    path = resolve(Path(services.settings.data_dir), message.audio_file)
    if path is None or not path.is_file():
        raise page.not_found()
    return FileResponse(path, media_type="audio/wav")


@router.get("/stats")
async def stats(page: Viewer, business: str = "", days: str = "30") -> Response:
    config = page.services.config
    slug = _business_choice(page, business)
    if slug is None:
        known = sorted(b.slug for b in config.businesses())
        slug = known[0] if known else None
    target = config.business(slug) if slug else None
    if slug is not None and target is None and page.is_admin:
        raise page.not_found()
    period = int(days) if days.isdigit() and int(days) in STATS_DAYS else 30
    if target is None:
        return page.render("stats.html", stats=None, businesses=config.businesses(),
                           slug="", days=period, choices=STATS_DAYS)
    zone = ZoneInfo(target.timezone)
    today = datetime.now(zone).date()
    start = datetime.combine(today - timedelta(days=period - 1), time(), zone).astimezone(UTC)
    end = datetime.combine(today + timedelta(days=1), time(), zone).astimezone(UTC)
    found = await page.services.store.business_stats(target.slug, start, end)
    per_day = charts.columns([(day.strftime("%d.%m"), float(n)) for day, n in found.per_day])
    latency = charts.hbars([
        (f"{row.path.value} {label}", value, f"{value:.1f} ms")
        for row in found.greeting if row.calls
        for label, value in (("p50", row.p50_ms or 0.0), ("p95", row.p95_ms or 0.0))])
    outcomes = charts.hbars([(name, float(n), str(n)) for name, n in found.outcomes.items()])
    return page.render("stats.html", stats=found, business=target, per_day=per_day,
                       latency=latency, outcomes=outcomes, businesses=config.businesses(),
                       slug=target.slug, days=period, choices=STATS_DAYS)
