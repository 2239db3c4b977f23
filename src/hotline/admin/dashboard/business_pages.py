"""A business's settings (greeting, prompts, voice, language, hours, tools, templates), and
the admin's list of businesses with a form to create one.

Every rule of a valid business is `check_business`'s: its `InvalidBusiness("field:
reason")` is shown next to that field. A saved business reloads the config cache at once
(the next call uses it, as through the API), and so the greeting cache renders a changed
greeting; the page polls until the new greeting's audio is ready.
"""

from __future__ import annotations

import re
from dataclasses import replace

from fastapi import APIRouter
from starlette.datastructures import FormData
from starlette.responses import Response

from hotline.admin.dashboard.web import FragmentViewer, Page, PageError, Viewer, form_of
from hotline.business import BUILTIN_TOOLS, BusinessConfig, TemplateConfig
from hotline.errors import DuplicateNumber, InvalidBusiness
from hotline.hours import WEEKDAYS
from hotline.store.validation import check_business

router = APIRouter(include_in_schema=False)
GREETING_POLL_MS = 1000
NEW_TEMPLATE = "new_template"
# `numbers[0]: …` belongs to the numbers field; `hours: 'mon' …` to the hours.
_INDEX = re.compile(r"\[\d+\]")


def error_of(exc: InvalidBusiness | DuplicateNumber) -> tuple[str, str]:
    """(the form field it belongs to, the reason) of a validation error."""
    text = str(exc)
    if isinstance(exc, DuplicateNumber):
        return "numbers", text
    field, sep, reason = text.partition(": ")
    if not sep or " " in field:
        return "", text
    field = _INDEX.sub("", field)
    if field.startswith("hours"):
        field = "hours"
    if field.startswith("templates.") or field == "templates":
        field = f"{NEW_TEMPLATE}.name"
    return field, reason


def _text(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name, default)
    # Browsers send CRLF line ends; the store keeps LF.
    return value.replace("\r\n", "\n").strip() if isinstance(value, str) else default


def business_from_form(current: BusinessConfig, form: FormData) -> BusinessConfig:
    """The business as the form would have it (not yet checked)."""
    # A template the form did not show (added through the API since the page was loaded)
    # keeps what it has: an absent field is not an emptied one.
    templates = [
        replace(t, greeting_template=_text(form, f"templates[{t.name}].greeting",
                                           t.greeting_template),
                voicemail_template=_text(form, f"templates[{t.name}].voicemail",
                                         t.voicemail_template),
                instructions=_text(form, f"templates[{t.name}].instructions", t.instructions))
        for t in current.templates]
    new_name = _text(form, f"{NEW_TEMPLATE}.name")
    if new_name:
        templates.append(TemplateConfig(
            name=new_name, greeting_template=_text(form, f"{NEW_TEMPLATE}.greeting"),
            voicemail_template=_text(form, f"{NEW_TEMPLATE}.voicemail"),
            instructions=_text(form, f"{NEW_TEMPLATE}.instructions")))
    return replace(
        current,
        name=_text(form, "name"), language=_text(form, "language"),
        voice=_text(form, "voice"), timezone=_text(form, "timezone"),
        greeting=_text(form, "greeting"), role=_text(form, "prompt.role"),
        tone=_text(form, "prompt.tone"), greeting_rules=_text(form, "prompt.greeting_rules"),
        knowledge=_text(form, "prompt.knowledge"), policies=_text(form, "prompt.policies"),
        faq=_text(form, "prompt.faq"),
        phone_numbers=tuple(line.strip() for line in _text(form, "numbers").splitlines()
                            if line.strip()),
        opening_hours=tuple((day, _text(form, f"hours.{day}")) for day in WEEKDAYS
                            if _text(form, f"hours.{day}")),
        tools=tuple(tool for tool in BUILTIN_TOOLS if form.get(f"tool.{tool}") == "on"),
        transfer_number=_text(form, "transfer_number") or None,
        recording=form.get("recording") == "on",
        recording_retention_days=_whole_number(_text(form, "recording_retention_days")),
        templates=tuple(templates))


def _whole_number(text: str) -> int:
    """The number typed, or -1 (which the check refuses, naming the field) for none."""
    try:
        return int(text)
    except ValueError:
        return -1


async def _visible(page: Page, slug: str) -> BusinessConfig:
    business = (await page.services.store.get_business(slug)
                if page.principal.may_see(slug) else None)
    if business is None:
        raise page.not_found()
    return business


@router.get("/businesses/{slug}")
async def settings_page(page: Viewer, slug: str, saved: int = 0) -> Response:
    business = await _visible(page, slug)
    return _render(page, business, errors={}, saved=bool(saved))


@router.post("/businesses/{slug}")
async def save_settings(page: Viewer, slug: str) -> Response:
    current = await _visible(page, slug)
    form = await form_of(page)
    wanted = business_from_form(current, form)
    try:
        await page.services.store.save_business(check_business(wanted))
    except (InvalidBusiness, DuplicateNumber) as exc:
        field, reason = error_of(exc)
        return _render(page, wanted, errors={field: reason}, saved=False, status=422)
    await page.services.config.load()  # this instance at once; others within their refresh
    return page.redirect(f"/businesses/{slug}?saved=1")


@router.get("/businesses/{slug}/greeting")
async def greeting_status(page: FragmentViewer, slug: str) -> Response:
    """Whether the business's greeting (as the running config has it) is rendered yet."""
    if not page.principal.may_see(slug):
        raise page.not_found()
    business = page.services.config.business(slug)
    if business is None:
        raise page.not_found()
    return page.render("_greeting.html", business=business,
                       greeting_state=_greeting_state(page, business)["greeting_state"])


def _greeting_state(page: Page, business: BusinessConfig) -> dict[str, str]:
    """live (no greeting cache), ready (its audio is in memory) or rendering."""
    services = page.services
    if not services.settings.greeting_cache:
        return {"greeting_state": "live"}
    ready = services.greetings.has(services.greetings.key(business.greeting, business.voice))
    return {"greeting_state": "ready" if ready else "rendering"}


# The settings form's fields an error can be shown beside (and templates[…].…, new_template.…).
SETTINGS_FIELDS = frozenset({
    "name", "language", "voice", "timezone", "transfer_number", "numbers", "greeting",
    "prompt", "prompt.role", "prompt.tone", "prompt.greeting_rules", "prompt.knowledge",
    "prompt.policies", "prompt.faq", "hours", "tools", "recording",
    "recording_retention_days"})


def placed_errors(errors: dict[str, str]) -> dict[str, str]:
    """Errors of fields the form does not show (dtmf, http_tools: the API's) go on top."""
    return {field if field in SETTINGS_FIELDS or field.startswith(("templates[", NEW_TEMPLATE))
            else "": reason for field, reason in errors.items()}


def _render(page: Page, business: BusinessConfig, *, errors: dict[str, str], saved: bool,
            status: int = 200) -> Response:
    running = page.services.config.business(business.slug) or business
    return page.render(
        "business.html", status=status, business=business, errors=placed_errors(errors),
        saved=saved,
        weekdays=WEEKDAYS, hours=dict(business.opening_hours), builtin_tools=BUILTIN_TOOLS,
        new_template=NEW_TEMPLATE, poll_ms=GREETING_POLL_MS,
        greeting_state=_greeting_state(page, running)["greeting_state"])


# -- the admin's list -----------------------------------------------------------------------
def _admin_only(page: Page) -> None:
    if not page.is_admin:
        raise PageError(404, page)  # a business key: as if the page did not exist


@router.get("/businesses")
async def businesses(page: Viewer) -> Response:
    _admin_only(page)
    return page.render("businesses.html", businesses=await page.services.store.list_businesses(),
                       errors={}, draft={})


@router.post("/businesses")
async def create_business(page: Viewer) -> Response:
    _admin_only(page)
    form = await form_of(page)
    draft = {name: _text(form, name) for name in
             ("slug", "name", "language", "voice", "timezone", "number", "greeting",
              "prompt.role")}
    wanted = BusinessConfig(
        slug=draft["slug"], name=draft["name"], language=draft["language"],
        voice=draft["voice"], timezone=draft["timezone"] or "UTC", greeting=draft["greeting"],
        role=draft["prompt.role"], tone="", greeting_rules="", knowledge="", policies="",
        faq="", phone_numbers=(draft["number"],) if draft["number"] else ())
    store = page.services.store
    errors: dict[str, str] = {}
    try:
        checked = check_business(wanted)
        if await store.get_business(checked.slug) is not None:
            errors["slug"] = f"business {checked.slug} exists"
        else:
            await store.save_business(checked)
    except (InvalidBusiness, DuplicateNumber) as exc:
        field, reason = error_of(exc)
        errors[{"numbers": "number"}.get(field, field)] = reason
    if errors:
        return page.render("businesses.html", status=422, errors=errors, draft=draft,
                           businesses=await store.list_businesses())
    await page.services.config.load()
    return page.redirect(f"/businesses/{wanted.slug}?saved=1")

