"""`hotline demo`: the whole product on this machine, with no keys and no network.

The server, the simulated realtime engine and the simulated Twilio run in this process on
free local ports. Two demo businesses are seeded; one inbound call goes to each and one
outbound call is placed through the REST API. Then call control: a caller presses 0 to
reach a person (a transfer through the REST API), and an outbound call reaches an
answering machine (a voicemail after the beep). Each call's transcript and latency
waterfall are printed; what each phone heard is written as a WAV file, its timings as JSON.

The dashboard is served all along: its URL, the admin token and a business key are printed
first (the calls show up live), and `then` (`hotline demo --serve`: until Ctrl-C) runs with
everything still up once the calls are done. The demo records its calls, so the dashboard
plays them.

`run_demo` runs on real time unless given a faster `clock` (the tests replay it compressed).
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import httpx
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from hotline.business_yaml import load_businesses_yaml
from hotline.core.record import CallRecord
from hotline.keys import new_key
from hotline.server import RunningServer, start_server
from hotline.settings import DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, DEV_OPENAI_KEY, Settings
from hotline.sim.call_result import PhoneCallResult
from hotline.sim.clock import REAL_TIME, SimClock
from hotline.sim.engine import EngineSimulator, LatencyProfile
from hotline.sim.phone import SimulatedPhone
from hotline.sim.script import (
    CallScript,
    Dtmf,
    Hangup,
    Say,
    Silence,
    WaitForAgentAudio,
    WaitForAgentSilence,
)
from hotline.sim.twilio_api import TwilioApiSimulator
from hotline.store.database import Store
from hotline.waterfall import render_transcript, render_waterfall

DEMO_CALLER = "+15105550199"
DEMO_LEAD = "+14155550123"
DEMO_VOICEMAIL = "+14155550188"  # answered by a machine
CALLS = 5
LEAD_LINE = "Yes, speaking. Sure, I have a minute."
# Long enough for the simulated engine (which speaks in real time) to render the lead's
# greeting while the phone rings, as it does on a real call.
DEMO_RING_MS = 14_000


@dataclass
class DemoCall:
    label: str
    phone: PhoneCallResult
    record: CallRecord


def demo_businesses_path() -> Path:
    return Path(str(resources.files("hotline") / "data" / "demo_businesses.yaml"))


def _conversation(line: str, language: str, reply_ms: int = 300) -> CallScript:
    """Listen to the greeting, say one thing, hear the answer, hang up."""
    return CallScript([
        WaitForAgentSilence(quiet_ms=700, timeout_ms=30_000),
        Say(line, language=language),
        WaitForAgentAudio(played_ms=reply_ms, timeout_ms=20_000),
        WaitForAgentSilence(quiet_ms=700, timeout_ms=30_000),
        Hangup(),
    ])


def prepare_output_dir(output_dir: Path) -> None:
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)


@dataclass(frozen=True)
class DemoKeys:
    """The demo's own secrets, new each run: the dashboard's admin token, and one business
    key (the Hebrew clinic's) to sign in as its owner."""

    admin_token: str
    key_secret: str
    business_slug: str
    business_key: str


async def run_demo(output_dir: Path, *, profile: LatencyProfile, console: Console,
                   clock: SimClock = REAL_TIME, port: int = 0,
                   then: Callable[[list[DemoCall]], Awaitable[None]] | None = None,
                   ) -> list[DemoCall]:
    database_url = f"sqlite+aiosqlite:///{output_dir / 'demo.db'}"
    businesses = [replace(b, recording=True)
                  for b in load_businesses_yaml(demo_businesses_path())]
    key_secret = secrets.token_urlsafe(32)
    business_key = new_key(key_secret)
    keys = DemoKeys(secrets.token_urlsafe(24), key_secret, businesses[0].slug,
                    business_key.key)
    store = Store(database_url)
    await store.upgrade()
    for business in businesses:
        await store.save_business(business)
    await store.create_api_key(keys.business_slug, "demo", business_key.prefix,
                               business_key.key_hash)
    await store.close()

    engine = EngineSimulator(profile, api_key=DEV_OPENAI_KEY, clock=clock)
    await engine.start()
    lead_script = _conversation(LEAD_LINE, "en")
    twilio = TwilioApiSimulator(
        account_sid=DEV_ACCOUNT_SID, auth_token=DEV_AUTH_TOKEN, ring_ms=DEMO_RING_MS,
        callee_scripts={DEMO_LEAD: lead_script,
                        DEMO_VOICEMAIL: CallScript.answering_machine()},
        answered_by={DEMO_VOICEMAIL: "machine_end_beep"}, clock=clock)
    await twilio.start()
    server: RunningServer | None = None
    calls: list[DemoCall] = []
    try:
        server = await start_server(Settings(
            database_url=database_url, openai_realtime_url=engine.url,
            openai_api_key=SecretStr(DEV_OPENAI_KEY), twilio_api_url=twilio.url,
            twilio_account_sid=DEV_ACCOUNT_SID, twilio_auth_token=SecretStr(DEV_AUTH_TOKEN),
            journal_path=str(output_dir / "journal.jsonl"),
            api_token=SecretStr(keys.admin_token), key_secret=SecretStr(keys.key_secret),
            data_dir=str(output_dir / "data"),
            greeting_cache_dir=str(output_dir / "greeting-cache"), clock_speed=clock.speed),
            port=port)
        console.print(f"[dim]server {server.url} · engine simulator {engine.url} · "
                      f"Twilio simulator {twilio.url} · profile {describe_profile(profile)}[/dim]")
        print_dashboard(server.url, keys, console)
        with console.status("the engine is rendering the inbound greetings (cached audio)…"):
            await server.services.greetings.wait_ready(businesses, timeout_s=120)
        # Attached to the Twilio simulator, so the server can transfer its calls.
        phone = twilio.attach_phone(SimulatedPhone(
            server_url=server.url, auth_token=DEV_AUTH_TOKEN, account_sid=DEV_ACCOUNT_SID,
            clock=clock))
        english = businesses[1]
        # What each inbound caller says (the simulated engine "transcribes" it as given).
        callers = [(businesses[0], "שלום, אני רוצה לקבוע תור לניקוי שיניים בשבוע הבא", "he"),
                   (english, "Hi, my kitchen sink is leaking. Can someone come today?", "en")]
        for index, (business, line, language) in enumerate(callers, 1):
            engine.caller_transcripts = [line]
            number = business.phone_numbers[0]
            console.print(f"[bold]{index}/{CALLS}[/bold] inbound call to {business.name} "
                          f"({number})")
            result = await phone.call(to=number, from_=DEMO_CALLER,
                                      script=_conversation(line, language))
            calls.append(DemoCall(f"inbound → {business.slug}", result,
                                  await server.services.final_record(result.call_sid)))

        engine.caller_transcripts = [LEAD_LINE]
        template = english.templates[0]
        console.print(f"[bold]3/{CALLS}[/bold] outbound call from {english.name} to "
                      f"{DEMO_LEAD} (template {template.name}, name=Dana); it rings "
                      f"{DEMO_RING_MS // 1000} s while the engine renders the greeting, which "
                      "plays at pickup while answering-machine detection runs alongside")
        calls.append(await _place(server, keys, twilio, english.slug, template.name, DEMO_LEAD,
                                  f"outbound → {DEMO_LEAD}"))

        number = english.phone_numbers[0]
        console.print(f"[bold]4/{CALLS}[/bold] inbound call to {english.name} ({number}): "
                      "the caller presses 0 for a person (transfer through Twilio's API)")
        engine.caller_transcripts = []
        press_zero = CallScript([WaitForAgentSilence(quiet_ms=700, timeout_ms=30_000),
                                 Dtmf("0"), Silence(30_000), Hangup()])
        result = await phone.call(to=number, from_=DEMO_CALLER, script=press_zero)
        calls.append(DemoCall(f"key 0 → {english.slug}", result,
                              await server.services.final_record(result.call_sid)))

        console.print(f"[bold]5/{CALLS}[/bold] outbound call to {DEMO_VOICEMAIL}: an "
                      "answering machine; the voicemail is left after its beep")
        calls.append(await _place(server, keys, twilio, english.slug, template.name,
                                  DEMO_VOICEMAIL, f"outbound → voicemail {DEMO_VOICEMAIL}"))
        if then is not None:
            await then(calls)
    finally:
        if server is not None:
            await server.stop()
        await twilio.stop()
        await engine.stop()
    return calls


async def _place(server: RunningServer, keys: DemoKeys, twilio: TwilioApiSimulator,
                 business: str, template: str, to: str, label: str) -> DemoCall:
    """An outbound call through the product's API, followed to its record."""
    async with httpx.AsyncClient(base_url=server.url, headers={
            "Authorization": f"Bearer {keys.admin_token}"}) as http:
        response = await http.post("/api/calls", json={
            "business": business, "to": to, "template": template,
            "variables": {"name": "Dana"}})
        response.raise_for_status()
    call_sid = response.json()["call_sid"]
    result = await twilio.wait_for_call(call_sid, timeout=180)
    return DemoCall(label, result, await server.services.final_record(call_sid))


def save_recordings(calls: list[DemoCall], output_dir: Path) -> None:
    for index, call in enumerate(calls, 1):
        stem = output_dir / f"call{index}-{call.phone.call_sid}"
        call.phone.save_wav(stem.with_suffix(".wav"), mix_caller=True)
        call.phone.save_timings(stem.with_suffix(".json"))


def print_demo(calls: list[DemoCall], console: Console, output_dir: Path) -> None:
    for call in calls:
        console.rule(f"[bold]{call.label}[/bold] {call.record.call_sid}")
        console.print(render_transcript(call.record.transcript, title="transcript"))
        console.print(render_waterfall(call.record.timeline,
                                       title="latency (ms since the webhook arrived)"))
    summary = Table(title="stream start → first greeting frame, measured by the simulated phone")
    for column in ("call", "webhook → TwiML ms", "start → first greeting frame ms",
                   "agent audio heard s", "outcome"):
        summary.add_column(column, justify="left" if column in ("call", "outcome") else "right")
    for call in calls:
        summary.add_row(call.label, _ms(call.phone.webhook_to_twiml_ms),
                        _ms(call.phone.start_to_first_media_ms),
                        f"{call.phone.played_ms / 1000:.1f}", call.record.outcome)
    console.print(summary)
    console.print(f"WAV recordings and timings: {output_dir}/ · call records: "
                  f"HOTLINE_DATABASE_URL=sqlite+aiosqlite:///{output_dir}/demo.db "
                  f"hotline calls list")


def print_dashboard(url: str, keys: DemoKeys, console: Console) -> None:
    console.print(f"[bold]Dashboard:[/bold] {url}/ · sign in with the admin token "
                  f"[bold]{keys.admin_token}[/bold], or as {keys.business_slug}'s owner with "
                  f"the key [bold]{keys.business_key}[/bold]")


def describe_profile(profile: LatencyProfile) -> str:
    return (f"connect {profile.connect_ms:.0f} ms, session.update {profile.session_update_ms:.0f}"
            f" ms, first audio {profile.first_audio_base_ms:.0f} ms + "
            f"{profile.first_audio_per_1000_chars_ms:.0f} ms/1000 chars")


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"
