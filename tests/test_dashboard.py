"""The dashboard over HTTP (no browser): the session cookie and its CSRF token, sign-in and
its rate limit, tenants kept apart, the interface language; and its pure parts: the
language negotiation, the Hebrew catalogue covering every message, the chart geometry and
where a validation error is shown. The browser's view is tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from babel.messages.extract import extract_from_dir
from itsdangerous import URLSafeTimedSerializer

from hotline.admin.dashboard.business_pages import error_of, placed_errors
from hotline.admin.dashboard.charts import columns, nice_step, waterfall
from hotline.admin.dashboard.i18n import Lang, from_accept_language, translations
from hotline.admin.dashboard.session import _SALT as SESSION_SALT
from hotline.admin.dashboard.session import COOKIE
from hotline.business import GreetingTiming, HttpTool, TemplateConfig
from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord, LeadMessage, TimelineStage
from hotline.errors import DuplicateNumber, InvalidBusiness
from hotline.keys import new_key
from tests.factories import make_business
from tests.stack import Stack, running_stack

ADMIN_TOKEN = "dashboard-admin-token"
KEY_SECRET = "dashboard-key-secret"
TEMPLATES = Path(__file__).resolve().parent.parent / "src/hotline/admin/dashboard/templates"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


# -- pure parts ------------------------------------------------------------------------------
@pytest.mark.parametrize(("header", "expected"), [
    (None, Lang.EN), ("", Lang.EN), ("he-IL,he;q=0.9,en;q=0.8", Lang.HE),
    ("en-US,en;q=0.9,he;q=0.8", Lang.EN), ("fr-FR,fr;q=0.9", Lang.EN),
    ("fr,he;q=0.5", Lang.HE), ("iw", Lang.HE), ("en;q=0.1,he;q=0.9", Lang.HE),
    ("he;q=0", Lang.EN), ("he;q=abc,en", Lang.EN),
    ("en;q=0.2, he ; Q = 0.8", Lang.HE), ("en;q=0.5,he;level=1;q=0.9", Lang.HE),
    ("he;q=nan,en;q=0.5", Lang.EN), ("en;q=0.5,he;q=7", Lang.EN),
])
def test_the_interface_language_follows_accept_language(header: str | None,
                                                        expected: Lang) -> None:
    assert from_accept_language(header) is expected


def test_every_message_of_the_templates_has_its_hebrew() -> None:
    hebrew = translations(Lang.HE)
    messages = {message for _, _, message, _, _ in extract_from_dir(
        str(TEMPLATES), method_map=[("**.html", "jinja2"), ("**.svg", "jinja2")])}
    assert len(messages) > 50
    untranslated = sorted(m for m in messages if hebrew.gettext(m) == m)
    assert untranslated == []  # add them to locale/he/LC_MESSAGES/messages.po


def test_the_waterfall_draws_each_stage_from_the_previous_one_to_scale() -> None:
    chart = waterfall([TimelineStage("webhook_received", 0), TimelineStage("stream_start", 100),
                       TimelineStage("first_audio_to_caller", 400, ""),
                       TimelineStage("tool_called", 300, "check_hours")])
    labels = [bar.label for bar in chart.bars]
    assert labels == ["webhook_received", "stream_start", "tool_called (check_hours)",
                      "first_audio_to_caller"]  # in time order
    stream, tool, first = chart.bars[1:]
    assert tool.x == pytest.approx(stream.x + stream.width)
    assert first.width == pytest.approx(2 * stream.width / 2 * 1)  # 100 ms each
    assert first.highlight and tool.minor and not stream.minor
    assert [tick.label for tick in chart.ticks][:2] == ["0", "100"]


def test_columns_share_one_scale_from_zero() -> None:
    chart = columns([("a", 0.0), ("b", 3.0), ("c", 6.0)])
    assert chart.bars[0].height == 0
    assert chart.bars[2].height == pytest.approx(2 * chart.bars[1].height)
    assert nice_step(7) == 2 and nice_step(0.3) == 0.1 and nice_step(5000) == 1000


def test_a_validation_error_names_the_form_field_it_belongs_to() -> None:
    assert error_of(InvalidBusiness("numbers[0]: '555' is not E.164")) == \
        ("numbers", "'555' is not E.164")
    assert error_of(InvalidBusiness("prompt.role: must not be empty")) == \
        ("prompt.role", "must not be empty")
    assert error_of(InvalidBusiness("hours: 'mon': '9-5' is not a HH:MM-HH:MM range"))[0] == \
        "hours"
    assert error_of(InvalidBusiness("templates[x].greeting: {who} is not filled"))[0] == \
        "templates[x].greeting"
    assert error_of(DuplicateNumber("+1555 already belongs to business 'b'"))[0] == "numbers"
    assert placed_errors({"dtmf": "'x' is not a phone key"}) == {"": "'x' is not a phone key"}
    assert placed_errors({"templates[a].greeting": "r", "hours": "h"}) == \
        {"templates[a].greeting": "r", "hours": "h"}


# -- over HTTP -------------------------------------------------------------------------------
@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    businesses = [make_business(), make_business(slug="other-co", name="Other Co",
                                                 phone_numbers=("+15005550007",))]
    async with running_stack(database_url, tmp_path, businesses, greeting_cache=False,
                             api_token=ADMIN_TOKEN, key_secret=KEY_SECRET) as running:
        yield running


async def business_key(stack: Stack, slug: str) -> tuple[str, str]:
    key = new_key(KEY_SECRET)
    await stack.services.store.create_api_key(slug, "test", key.prefix, key.key_hash)
    return key.key, key.prefix


@asynccontextmanager
async def signed_in(stack: Stack, key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.server.url) as client:
        csrf = csrf_of((await client.get("/signin")).text)
        answer = await client.post("/signin", data={"csrf": csrf, "key": key, "next": "/calls"})
        assert answer.status_code == 303 and answer.headers["location"] == "/calls"
        yield client


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found is not None
    return found[1]


async def save_call(stack: Stack, call_sid: str, slug: str, text: str) -> None:
    now = datetime.now(UTC)
    await stack.services.store.save_call(CallRecord(
        call_sid=call_sid, business_slug=slug, direction="inbound", from_number="+15550001111",
        to_number="+15005550006", status="completed", outcome=Outcome.COMPLETED,
        started_at=now, ended_at=now, messages=[LeadMessage("Dana", "+15550001111", text, 0)]))


async def test_forms_need_the_session_s_csrf_token_and_the_cookie_is_locked_down(
        stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.server.url) as client:
        page = await client.get("/calls")
        assert page.status_code == 303 and page.headers["location"] == "/signin?next=/calls"
        cookie = page.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        form = await client.get("/signin")
        csrf = csrf_of(form.text)
        for data in ({"key": ADMIN_TOKEN}, {"key": ADMIN_TOKEN, "csrf": csrf + "x"}):
            refused = await client.post("/signin", data=data)
            assert refused.status_code == 403
            assert COOKIE not in refused.headers.get("set-cookie", "")  # not signed in
        # Another browser's token (a cross-site form) does not fit this session either.
        async with httpx.AsyncClient(base_url=stack.server.url) as other:
            foreign = csrf_of((await other.get("/signin")).text)
        assert (await client.post("/signin", data={"key": ADMIN_TOKEN, "csrf": foreign})
                ).status_code == 403
        assert (await client.post("/signin", data={"key": ADMIN_TOKEN, "csrf": csrf})
                ).status_code == 303
        calls = await client.get("/calls")
        assert calls.status_code == 200
        # Signed in, the token is new (not the one the sign-in page showed) and still needed.
        assert csrf_of(calls.text) != csrf
        assert (await client.post("/signout", data={"csrf": csrf})).status_code == 403
        assert (await client.get("/calls")).status_code == 200
        assert (await client.post("/signout", data={"csrf": csrf_of(calls.text)})
                ).status_code == 303
        assert (await client.get("/calls")).status_code == 303
        # Signing out again (the form of a tab left open) lands on the sign-in page.
        again = await client.post("/signout", data={"csrf": csrf_of(calls.text)})
        assert again.status_code == 303 and again.headers["location"] == "/signin"


async def test_a_tampered_cookie_or_a_revoked_key_is_signed_out(stack: Stack) -> None:
    key, prefix = await business_key(stack, "acme-dental")
    async with signed_in(stack, key) as client:
        assert (await client.get("/calls")).status_code == 200
        good = client.cookies[COOKIE]
        client.cookies.set(COOKIE, good[:-2] + ("AA" if not good.endswith("AA") else "BB"))
        assert (await client.get("/calls")).status_code == 303
        client.cookies.set(COOKIE, good)
        assert (await client.get("/calls")).status_code == 200
        await stack.services.store.revoke_api_key(prefix)
        answer = await client.get("/calls")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/signin")


async def test_wrong_keys_are_rate_limited_with_the_api(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.server.url) as client:
        csrf = csrf_of((await client.get("/signin")).text)
        for _ in range(10):
            wrong = await client.post("/signin", data={"csrf": csrf, "key": "hk_nope"})
            assert wrong.status_code == 401
            assert "hk_nope" not in wrong.text  # never echoed
        throttled = await client.post("/signin", data={"csrf": csrf, "key": ADMIN_TOKEN})
        assert throttled.status_code == 429
        # The API's limiter: the same address is refused there too.
        api = await client.get("/api/v1/businesses",
                               headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert api.status_code == 429


async def test_a_business_key_sees_its_own_business_only(stack: Stack) -> None:
    await save_call(stack, "CA" + "1" * 32, "acme-dental", "call me back about a filling")
    await save_call(stack, "CA" + "2" * 32, "other-co", "secret of the other business")
    key, _ = await business_key(stack, "acme-dental")
    async with signed_in(stack, key) as client:
        calls = await client.get("/calls", params={"business": "other-co"})
        assert "CA" + "1" * 32 in calls.text and "CA" + "2" * 32 not in calls.text
        for path in (f"/calls/CA{'2' * 32}", f"/calls/CA{'2' * 32}/recording",
                     "/businesses/other-co", "/businesses/other-co/greeting", "/businesses",
                     f"/messages/CA{'2' * 32}-1/audio", "/calls/CA-nothing-here"):
            answer = await client.get(path)
            assert answer.status_code == 404, path
            assert "secret of the other business" not in answer.text
        messages = await client.get("/messages")
        assert "a filling" in messages.text and "secret of the other" not in messages.text
        csrf = csrf_of(messages.text)
        other = await client.post(f"/messages/CA{'2' * 32}-1/handled",
                                  data={"csrf": csrf, "handled": "1"})
        assert other.status_code == 404
        assert (await stack.services.store.get_message(f"CA{'2' * 32}-1")).handled_at is None  # type: ignore[union-attr]
        changed = await client.post("/businesses/other-co", data={"csrf": csrf, "name": "x"})
        assert changed.status_code == 404
        assert (await stack.services.store.get_business("other-co")).name == "Other Co"  # type: ignore[union-attr]
        stats = await client.get("/stats", params={"business": "other-co"})
        assert stats.status_code == 200 and "Acme Dental" in stats.text


async def test_the_hebrew_interface_is_mirrored(stack: Stack) -> None:
    async with signed_in(stack, ADMIN_TOKEN) as client:
        english = await client.get("/calls")
        assert '<html lang="en" dir="ltr">' in english.text
        hebrew = await client.get("/calls", headers={"Accept-Language": "he-IL,he;q=0.9"})
        assert '<html lang="he" dir="rtl">' in hebrew.text and "שיחות" in hebrew.text
        switched = await client.post("/lang", data={"csrf": csrf_of(english.text),
                                                    "lang": "he", "next": "//evil.example/"})
        assert switched.status_code == 303 and switched.headers["location"] == "/calls"
        assert '<html lang="he" dir="rtl">' in (await client.get("/calls")).text  # kept


async def test_the_call_page_shows_tool_calls_waterfall_and_outcome(stack: Stack) -> None:
    now = datetime.now(UTC)
    await stack.services.store.save_call(CallRecord(
        call_sid="CA" + "3" * 32, business_slug="acme-dental", direction="inbound",
        from_number="+15550001111", to_number="+15005550006", status="completed",
        outcome=Outcome.TRANSFERRED, started_at=now, ended_at=now,
        timeline=[TimelineStage("webhook_received", 0), TimelineStage("stream_start", 90),
                  TimelineStage("greeting_requested", 91, "live, compact prompt"),
                  TimelineStage("first_audio_to_caller", 400),
                  TimelineStage("tool_called", 900, 'check_hours {"day": "<b>mon</b>"}'),
                  TimelineStage("tool_done", 950, 'check_hours: ok {"open": true}')]))
    async with signed_in(stack, ADMIN_TOKEN) as client:
        page = (await client.get(f"/calls/CA{'3' * 32}")).text
    assert "check_hours" in page and "&#34;open&#34;: true" in page
    assert "<b>mon</b>" not in page and "&lt;b&gt;mon&lt;/b&gt;" in page  # escaped, in SVG too
    assert re.search(r'<svg class="waterfall"[^>]*>', page)
    assert page.count('<g class="stage') == 6
    assert "first_audio_to_caller" in page and "310.0 ms" in page  # stream start → audio
    assert 'class="path">cold<' in page  # live, with no warm session: cold
    assert "transferred" in page


async def test_the_polled_parts_answer_401_when_signed_out_not_the_sign_in_page(
        stack: Stack) -> None:
    """The page's script fetches them every few seconds: a redirect would be followed and
    the sign-in page pasted into the live calls, polled on forever."""
    key, prefix = await business_key(stack, "acme-dental")
    parts = ("/calls/live", "/businesses/acme-dental/greeting")
    async with httpx.AsyncClient(base_url=stack.server.url) as stranger:
        for path in parts:
            answer = await stranger.get(path)
            assert answer.status_code == 401, path
            assert 'name="key"' not in answer.text
    async with signed_in(stack, key) as client:
        for path in parts:
            assert (await client.get(path)).status_code == 200, path
        await stack.services.store.revoke_api_key(prefix)
        assert (await client.get("/calls/live")).status_code == 401
        assert (await client.get("/calls")).status_code == 303  # the reload signs in again


class FormFields(HTMLParser):
    """What a browser sends for a page's form of `form_class`: its fields as shown."""

    def __init__(self, form_class: str) -> None:
        super().__init__()
        self.form_class, self.inside, self.textarea = form_class, False, None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "form":
            self.inside = named.get("class") == self.form_class
        elif self.inside and tag == "input" and named.get("name"):
            if named.get("type") != "checkbox" or "checked" in named:
                self.fields[named["name"] or ""] = named.get("value") or (
                    "on" if named.get("type") == "checkbox" else "")
        elif self.inside and tag == "textarea":
            self.textarea = named.get("name")
            self.fields[self.textarea or ""] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self.textarea = None
        elif tag == "form":
            self.inside = False

    def handle_data(self, data: str) -> None:
        if self.textarea:
            self.fields[self.textarea] += data


def form_fields(html: str, form_class: str) -> dict[str, str]:
    parser = FormFields(form_class)
    parser.feed(html)
    return parser.fields


async def test_saving_the_settings_keeps_what_the_form_does_not_show(stack: Stack) -> None:
    """DTMF actions, HTTP tools, timings and the call cap are set through the API only: the
    form must not erase them, nor a template added since the page was loaded."""
    store = stack.services.store
    business = await store.get_business("acme-dental")
    assert business is not None
    await store.save_business(replace(
        business, dtmf_actions=(("0", "transfer_to_human"),), transfer_number="+15550009999",
        tools=("end_call", "transfer_to_human"), max_call_duration_s=321,
        bot_speaks_first=False, greeting_timing=GreetingTiming.AFTER_AMD,
        http_tools=(HttpTool("book", "Books a slot", "https://example.com/book",
                             {"type": "object", "properties": {}}),),
        templates=(replace(business.templates[0], greeting_timing=GreetingTiming.AFTER_AMD),)))
    await stack.services.config.load()
    async with signed_in(stack, ADMIN_TOKEN) as client:
        shown = form_fields((await client.get("/businesses/acme-dental")).text, "settings")
        assert shown["greeting"] == "Hi, Acme Dental, how can I help?"
        before = await store.get_business("acme-dental")
        assert before is not None
        # Meanwhile, a template is added through the API.
        await store.save_business(replace(before, templates=(*before.templates, TemplateConfig(
            "follow_up", "Hi {name}, Acme Dental again.", "Ask how the visit went."))))
        saved = await client.post("/businesses/acme-dental",
                                  data={**shown, "greeting": "Hello from Acme!"})
        assert saved.status_code == 303, re.findall(r"role=\"alert\">([^<]*)", saved.text)
    after = await store.get_business("acme-dental")
    assert after is not None and after.greeting == "Hello from Acme!"
    assert after.dtmf_actions == (("0", "transfer_to_human"),)
    assert [tool.name for tool in after.http_tools] == ["book"]
    assert after.tools == ("end_call", "transfer_to_human")
    assert (after.max_call_duration_s, after.bot_speaks_first, after.greeting_timing) == \
        (321, False, GreetingTiming.AFTER_AMD)
    assert after.knowledge == business.knowledge and after.faq == business.faq
    templates = {t.name: t for t in after.templates}
    assert templates["reminder"].greeting_timing is GreetingTiming.AFTER_AMD
    assert templates["reminder"].greeting_template == business.templates[0].greeting_template
    assert templates["follow_up"].greeting_template == "Hi {name}, Acme Dental again."


async def test_the_admin_cookie_holds_no_plain_digest_of_the_admin_token(stack: Stack) -> None:
    """The cookie is signed, not encrypted: whoever holds it reads it. A plain hash of the
    token there could be guessed offline; the mark is keyed with the server's secret."""
    async with signed_in(stack, ADMIN_TOKEN) as client:
        valid, payload = URLSafeTimedSerializer("not the secret").loads_unsafe(
            client.cookies[COOKIE])
    assert not valid and payload["admin"] is True
    mark = payload["admin_mark"]
    for digest in (hashlib.sha256(SESSION_SALT.encode() + ADMIN_TOKEN.encode()),
                   hashlib.sha256(ADMIN_TOKEN.encode())):
        assert digest.hexdigest()[:len(mark)] != mark


async def test_a_form_sent_signed_out_signs_in_back_to_the_form_s_page(stack: Stack) -> None:
    """Not to the form's action: "Mark handled" is POST only, so going back there after
    signing in answered 405."""
    async with httpx.AsyncClient(base_url=stack.server.url) as stranger:
        sent = await stranger.post("/messages/CA-x-1/handled", data={"handled": "1"},
                                   headers={"Referer": f"{stack.server.url}/messages?show=done"})
        assert sent.status_code == 303
        assert sent.headers["location"] == "/signin?next=/messages%3Fshow%3Ddone"
        for referer in ("https://elsewhere.example/messages", ""):
            sent = await stranger.post("/messages/CA-x-1/handled", data={"handled": "1"},
                                       headers={"Referer": referer})
            assert sent.headers["location"] == "/signin?next=/calls"
