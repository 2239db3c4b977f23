"""The dashboard in a real browser: Debian's Chromium, driven by Playwright's Python API
(`executable_path`: nothing downloads a browser), against the whole product over real
sockets (uvicorn, the simulated Twilio and engine) with the two demo businesses.

One test walks the owner's paths in order, on one server and one browser (a second test in
this module could be sent to another xdist worker, which would start both again): sign in
with a business key; call the Hebrew clinic and see the call's transcript laid out right
to left, its latency waterfall and its recording playing; edit the English business's
greeting and hear it in the next call's transcript; fail to open another business's call;
the same pages at a phone's width and in the Hebrew interface; messages, stats and the
admin's businesses. Each page's screenshot is written to .test-logs/screenshots/, or to
the folder HOTLINE_TEST_SCREENSHOTS names: `make screenshots` renews docs/screenshots/ (the
README shows them), so that a test run leaves the checkout as it was.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from hotline.business_yaml import load_businesses_yaml
from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord, LeadMessage
from hotline.demo import demo_businesses_path
from hotline.keys import new_key
from hotline.sim.script import (
    CallScript,
    Hangup,
    Say,
    Silence,
    WaitForAgentAudio,
    WaitForAgentSilence,
)
from tests.services import in_ci, unavailable
from tests.stack import Stack, running_stack

try:  # the dev extra's; under CI its absence fails the run (tests/services.py), never skips
    from playwright import async_api as playwright_api
except ImportError:
    if in_ci():
        raise
    pytest.skip("playwright is not installed (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = [pytest.mark.sockets, pytest.mark.asyncio(loop_scope="module")]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = Path(os.environ.get("HOTLINE_TEST_SCREENSHOTS")
                   or ROOT / ".test-logs" / "screenshots")
ADMIN_TOKEN = "browser-test-admin-token"
KEY_SECRET = "browser-test-key-secret"
HEBREW = "smile-dental-tlv"
ENGLISH = "bay-plumbing"
CALLER = "+972525550123"
HEBREW_LINE = "שלום, אני רוצה לקבוע תור לניקוי אבנית ביום ראשון בבוקר"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000
# A call the live list must catch stays on the line this long (call time; the stack's
# silence nudge is set beyond it, so nobody speaks meanwhile).
LIVE_HOLD_MS = 20_000
# For a failure's message: the elements that stick out of a phone's screen.
WIDER_THAN_THE_SCREEN = """() => [...document.querySelectorAll('body *')]
  .filter(e => { const r = e.getBoundingClientRect();
                 return r.right > innerWidth + 1 || r.left < -1; })
  .slice(0, 5)
  .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().width))"""


@dataclass
class Site:
    stack: Stack
    browser: playwright_api.Browser
    keys: dict[str, str]

    @property
    def url(self) -> str:
        return self.stack.server.url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    if shutil.which(CHROMIUM) is None:
        unavailable("Chromium (apt-get install chromium)", CHROMIUM)
    tmp_path = tmp_path_factory.mktemp("dashboard")
    businesses = [replace(b, recording=True)
                  for b in load_businesses_yaml(demo_businesses_path())]
    async with running_stack(f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}", tmp_path,
                             businesses, api_token=ADMIN_TOKEN, key_secret=KEY_SECRET,
                             silence_nudge_s=60, silence_hangup_s=120) as stack:
        await stack.services.greetings.wait_ready(businesses, timeout_s=60)
        keys = {}
        for business in businesses:
            key = new_key(KEY_SECRET)
            await stack.services.store.create_api_key(business.slug, "browser test",
                                                      key.prefix, key.key_hash)
            keys[business.slug] = key.key
        async with playwright_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                       args=CHROMIUM_ARGS)
            try:
                yield Site(stack, browser, keys)
            finally:
                await browser.close()


async def place_call(site: Site, to: str, line: str, language: str,
                     hold_ms: int = 0) -> CallRecord:
    """A caller listens to the greeting, says one line, hears the answer, stays on the line
    `hold_ms` more and hangs up."""
    site.stack.engine.caller_transcripts = [line]
    script = CallScript([WaitForAgentSilence(quiet_ms=1200, timeout_ms=30_000),
                         Say(line, language=language),
                         WaitForAgentAudio(played_ms=300, timeout_ms=20_000),
                         WaitForAgentSilence(quiet_ms=1200, timeout_ms=30_000),
                         Silence(hold_ms), Hangup()])
    result = await site.stack.phone.call(to=to, from_=CALLER, script=script)
    return await site.stack.services.final_record(result.call_sid, timeout_s=30)


async def browser_page(site: Site, *, viewport: dict[str, int] = DESKTOP,
                       locale: str = "en-US") -> playwright_api.Page:
    context = await site.browser.new_context(viewport=viewport, locale=locale)  # type: ignore[arg-type]
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


async def sign_in(site: Site, page: playwright_api.Page, key: str, path: str = "/calls",
                  screenshot: str = "") -> None:
    await page.goto(site.url + path)
    assert "/signin" in page.url  # not signed in yet: the sign-in page, then back here
    if screenshot:
        await shot(page, screenshot)
    await page.fill("#key", key)
    await page.click("form[action='/signin'] button[type=submit]")
    await page.wait_for_url(re.compile(re.escape(path) + r"$"))


async def shot(page: playwright_api.Page, name: str) -> None:
    await asyncio.to_thread(SCREENSHOTS.mkdir, parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def direction(page: playwright_api.Page, selector: str) -> str:
    value: str = await page.eval_on_selector(selector, "e => getComputedStyle(e).direction")
    return value


async def test_the_owner_s_dashboard_in_a_browser(site: Site) -> None:
    hebrew_call = await place_call(site, "+97235550100", HEBREW_LINE, "he")
    assert hebrew_call.outcome is not None

    # -- a business key signs in; its call, right to left, with waterfall and recording ----
    dental = await browser_page(site)
    await sign_in(site, dental, site.keys[HEBREW])
    assert await direction(dental, "html") == "ltr"
    row = dental.locator(f"a[href='/calls/{hebrew_call.call_sid}']")
    await row.wait_for()
    await shot(dental, "calls")
    await row.click()
    await dental.wait_for_url(f"**/calls/{hebrew_call.call_sid}")
    turns = dental.locator(".transcript .turn p")
    assert await turns.count() >= 2
    said = [await turns.nth(i).inner_text() for i in range(await turns.count())]
    assert any(HEBREW_LINE in text for text in said)
    for i in range(await turns.count()):  # every turn of the Hebrew call: right to left
        assert await turns.nth(i).evaluate("e => getComputedStyle(e).direction") == "rtl"
    waterfall = dental.locator("svg.waterfall")
    assert await waterfall.locator("rect").count() >= 5
    labels = await waterfall.text_content() or ""
    assert "stream_start" in labels and "first_audio_to_caller" in labels
    assert await dental.locator(".path").inner_text() in ("cached", "warm", "cold")
    await dental.wait_for_function(
        "() => { const a = document.getElementById('recording');"
        " return a && a.readyState >= 1 && a.duration > 0; }")
    # A turn's click seeks the player to its time.
    last = dental.locator(".transcript .turn[data-seek]").last
    seek_s = float(await last.get_attribute("data-seek") or "0")
    await last.click()
    await dental.wait_for_function(
        f"() => document.getElementById('recording').currentTime >= {seek_s - 0.05}")
    await shot(dental, "call")

    # -- the English business edits its greeting; the next call says the new one ----------
    plumber = await browser_page(site)
    await sign_in(site, plumber, site.keys[ENGLISH], f"/businesses/{ENGLISH}")
    greeting = f"Bayside Plumbing, this is Sam. Edited at {datetime.now(UTC):%H:%M:%S}."
    await plumber.fill("#f-greeting", greeting)
    await plumber.click("form.settings button[type=submit]")
    await plumber.wait_for_url(f"**/businesses/{ENGLISH}?saved=1")
    await plumber.locator(".status-ready").wait_for()  # polled until the audio is rendered
    await shot(plumber, "settings")
    # A field the check refuses: the error next to that field, nothing saved.
    await plumber.fill("#f-numbers", "555-0100")
    await plumber.click("form.settings button[type=submit]")
    assert "E.164" in await plumber.locator("#error-numbers").inner_text() or \
        await plumber.locator("#error-numbers").count() == 1
    assert await plumber.locator("#f-numbers.invalid").count() == 1
    # The calls page shows the call while it runs, without a reload (it polls).
    await plumber.goto(f"{site.url}/calls")
    await plumber.locator("#live .empty").wait_for()
    # It lasts a few seconds of wall time more than the page's 2 s poll.
    running = asyncio.create_task(
        place_call(site, "+14155550100", "Is the shop open today?", "en", hold_ms=LIVE_HOLD_MS))
    await plumber.locator("#live .live-calls li", has_text=CALLER).wait_for()
    await shot(plumber, "calls-live")
    english_call = await running
    await plumber.locator("#live .empty").wait_for()  # and drops it once it has ended,
    # when the call joins the list below, still without a reload.
    await plumber.locator(f"#calls-list a[href='/calls/{english_call.call_sid}']").wait_for()
    first_agent_turn = next(t for t in english_call.transcript if t.speaker == "agent")
    assert first_agent_turn.text == greeting
    await plumber.goto(f"{site.url}/calls/{english_call.call_sid}")
    assert greeting in await plumber.locator(".transcript").inner_text()
    assert await direction(plumber, ".transcript .turn p") == "ltr"

    # -- a business key cannot open another business's call ---------------------------------
    response = await dental.goto(f"{site.url}/calls/{english_call.call_sid}")
    assert response is not None and response.status == 404
    assert greeting not in await dental.content()
    response = await dental.goto(f"{site.url}/calls/{english_call.call_sid}/recording")
    assert response is not None and response.status == 404
    response = await plumber.goto(f"{site.url}/businesses/{HEBREW}")
    assert response is not None and response.status == 404

    # -- a phone's width, in the Hebrew interface -------------------------------------------
    phone = await browser_page(site, viewport=PHONE, locale="he-IL")
    await sign_in(site, phone, site.keys[HEBREW], screenshot="signin-phone-he")
    assert await direction(phone, "html") == "rtl"
    assert await phone.get_attribute("html", "lang") == "he"
    assert "שיחות" in await phone.locator("nav").inner_text()
    await shot(phone, "calls-phone-he")
    assert await phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], \
        await phone.evaluate(WIDER_THAN_THE_SCREEN)
    await phone.goto(f"{site.url}/calls/{hebrew_call.call_sid}")
    assert await direction(phone, "main") == "rtl"
    assert await direction(phone, ".transcript .turn p") == "rtl"
    await shot(phone, "call-phone-he")
    assert await phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], \
        await phone.evaluate(WIDER_THAN_THE_SCREEN)
    # The language is switchable: English, left to right, on the same page.
    await phone.click("button[name=lang][value=en]")
    await phone.wait_for_url(f"**/calls/{hebrew_call.call_sid}")
    assert await direction(phone, "html") == "ltr"

    # -- messages: a lead, marked handled with one click -------------------------------------
    await site.stack.services.store.save_call(CallRecord(
        call_sid="CA" + "d" * 32, business_slug=HEBREW, direction="inbound",
        from_number=CALLER, to_number="+97235550100", status="completed",
        outcome=Outcome.COMPLETED, started_at=datetime.now(UTC), ended_at=datetime.now(UTC),
        messages=[LeadMessage("דנה כהן", "+972525550123", "מבקשת לחזור אליה לגבי הלבנה", 0)]))
    await dental.goto(f"{site.url}/messages")
    lead = dental.locator("table.messages tbody tr", has_text="דנה כהן")
    await lead.wait_for()
    await shot(dental, "messages")
    await lead.locator("button[name=handled][value='1']").click()
    await dental.wait_for_url("**/messages*")
    assert await dental.locator("table.messages tbody tr", has_text="דנה כהן").count() == 0
    await dental.goto(f"{site.url}/messages?show=done")
    assert await dental.locator("tr.handled", has_text="דנה כהן").count() == 1

    # -- stats: calls per day and greeting latency as SVG charts -----------------------------
    await dental.goto(f"{site.url}/stats")
    assert await dental.locator("svg.columns rect").count() >= 7
    assert await dental.locator("svg.hbars").count() == 2
    await shot(dental, "stats")

    # -- the admin lists the businesses and creates one --------------------------------------
    admin = await browser_page(site)
    await sign_in(site, admin, ADMIN_TOKEN, "/businesses")
    assert await admin.locator("table tbody tr").count() == 2
    await admin.fill("#f-slug", "corner-bakery")
    await admin.fill("#f-name", "Corner Bakery")
    await admin.fill("#f-number", "0101")
    await admin.fill("#f-greeting", "Corner Bakery, good morning!")
    await admin.fill("#f-prompt\\.role", "You take bread orders for the Corner Bakery.")
    await admin.click("form[action='/businesses'] button[type=submit]")
    assert await admin.locator("#error-number").count() == 1  # not E.164: said beside it
    await admin.fill("#f-number", "+14155550177")
    await admin.click("form[action='/businesses'] button[type=submit]")
    await admin.wait_for_url("**/businesses/corner-bakery?saved=1")
    assert site.stack.services.config.business("corner-bakery") is not None
    await admin.goto(f"{site.url}/businesses")
    await shot(admin, "businesses")
    # -- signed out in another tab: the calls page's next poll takes it to the sign-in page --
    await plumber.goto(f"{site.url}/calls")
    other_tab = await plumber.context.new_page()
    await other_tab.goto(f"{site.url}/calls")
    await other_tab.click("form[action='/signout'] button[type=submit]")
    await other_tab.wait_for_url("**/signin")
    await plumber.wait_for_url("**/signin?next=/calls")
    for page in (dental, plumber, phone, admin):
        await page.context.close()
