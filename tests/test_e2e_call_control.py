"""Call control end to end over real sockets: tools, hang-up, transfer, DTMF, answering
machines, silence and time limits, barge-in hardening.

The simulated engine calls functions on a script; the simulated Twilio records every REST
call update, ends the media stream on it and follows a `<Dial>`. Assertions are on what the
simulators saw (the phone's timings, what the engine received, the REST updates), never on
absolute durations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hotline.business import GreetingTiming, HttpTool, TemplateConfig
from hotline.local_server import LocalServer
from hotline.prompts import NUDGE_INSTRUCTIONS, SILENCE_GOODBYE_INSTRUCTIONS
from hotline.sim.call_result import PhoneCallResult
from hotline.sim.engine import ScriptedToolCall, SimulatedSession
from hotline.sim.script import (
    CallScript,
    Dtmf,
    Hangup,
    Say,
    Silence,
    Tone,
    WaitForAgentAudio,
    WaitForAgentSilence,
)
from hotline.sim.twilio_requests import send_twilio_request
from hotline.tools import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_tool_signature
from tests.factories import TEST_NUMBER, make_business
from tests.services import reachable_redis_url
from tests.stack import ACCOUNT_SID, AUTH_TOKEN, Stack, running_stack
from tests.test_e2e_calls import CALLER, LONG_GREETING, assert_nothing_leaked, received, record_of
from tests.test_metrics import samples

pytestmark = pytest.mark.sockets  # servers, simulators or services over real sockets

TRANSFER_NUMBER = "+15550009999"
SHORT_REPLIES = ["Sure, one moment.", "Okay, noted.", "Thanks, goodbye."]
TOOL_SECRET = "tool-secret-for-tests"
# Greet, say something, then stay on the line until the server ends the call.
TALK_THEN_WAIT = CallScript([WaitForAgentSilence(quiet_ms=400, timeout_ms=20_000),
                             Say("Thanks, I think that is all."),
                             WaitForAgentAudio(played_ms=200, timeout_ms=20_000),
                             Silence(30_000), Hangup()])


def ask(line: str) -> CallScript:
    """Hear the greeting, say `line`, hear the answer out, hang up."""
    return CallScript([WaitForAgentSilence(quiet_ms=400, timeout_ms=20_000), Say(line),
                       WaitForAgentAudio(played_ms=200, timeout_ms=20_000),
                       WaitForAgentSilence(quiet_ms=600, timeout_ms=20_000), Hangup()])


def business(**overrides: Any) -> Any:
    values: dict[str, Any] = {
        "tools": ("end_call", "transfer_to_human", "take_message", "check_hours"),
        "transfer_number": TRANSFER_NUMBER,
        "opening_hours": (("mon", "08:00-18:00"), ("tue", "08:00-18:00")),
    }
    values.update(overrides)
    return make_business(**values)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """SQLite only: these tests are about the call, not the store (whose PostgreSQL path,
    messages and outcomes included, has its own tests), and they are the slowest we have."""
    return f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"


@asynccontextmanager
async def control_stack(url: str, tmp_path: Path, businesses: list[Any],
                        **settings: Any) -> AsyncIterator[Stack]:
    async with running_stack(url, tmp_path, businesses, **settings) as stack:
        stack.engine.replies = SHORT_REPLIES  # short lines keep each call a few seconds
        yield stack


@pytest.fixture
async def stack(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with control_stack(sqlite_url, tmp_path, [business()], greeting_cache=False,
                             tool_signing_secret=TOOL_SECRET) as running:
        yield running


def function_outputs(session: SimulatedSession) -> list[dict[str, Any]]:
    return [e["item"] for _, e in received(session, "conversation.item.create")
            if e["item"]["type"] == "function_call_output"]  # type: ignore[index]


def updates_for(stack: Stack, call_sid: str) -> list[Any]:
    return [u for u in stack.twilio.updates if u.call_sid == call_sid]


def last_mark_echo(result: PhoneCallResult) -> float:
    return max(m.echoed_at for m in result.marks_echoed if not m.flushed_by_clear)


def stages_of(record: Any) -> list[str]:
    return [s.stage for s in record.timeline]


# -- tools ------------------------------------------------------------------------------
async def test_end_call_hangs_up_through_rest_after_the_goodbye_played(stack: Stack) -> None:
    stack.engine.tool_script = [ScriptedToolCall(1, "end_call", {"reason": "caller is done"})]
    result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=TALK_THEN_WAIT)
    session = await stack.engine.wait_for_session()

    [update] = updates_for(stack, result.call_sid)
    assert update.params["Status"] == "completed"
    # The goodbye (said in the reply that called end_call) had been heard in full: its last
    # mark came back before the REST hang-up was sent.
    assert last_mark_echo(result) <= update.at
    assert result.ended_by == "api"
    [output] = function_outputs(session)
    assert orjson.loads(output["output"])["ok"] is True
    record = await record_of(stack, result.call_sid)
    assert record.outcome == "hung_up_by_agent"
    assert {"tool_called", "tool_done", "closing", "hang_up_requested"} <= set(
        stages_of(record))
    await assert_nothing_leaked(stack)


async def test_transfer_dials_the_business_and_keeps_the_transcript(stack: Stack) -> None:
    stack.engine.tool_script = [ScriptedToolCall(1, "transfer_to_human", {"reason": "asked"})]
    result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=TALK_THEN_WAIT)

    [update] = updates_for(stack, result.call_sid)
    assert f"<Dial>{TRANSFER_NUMBER}</Dial>" in update.params["Twiml"]
    assert last_mark_echo(result) <= update.at
    assert result.dial_numbers == [TRANSFER_NUMBER]
    record = await record_of(stack, result.call_sid)
    assert record.outcome == "transferred"
    assert [t.speaker for t in record.transcript][:3] == ["agent", "caller", "agent"]
    assert "transfer_requested" in stages_of(record)


async def test_take_message_is_stored_and_listed(stack: Stack) -> None:
    stack.engine.tool_script = [ScriptedToolCall(1, "take_message", {
        "name": "Dana Levi", "phone": "+15550001111", "message": "Please call me back"})]
    result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER,
                                    script=ask("Can you take a message?"))
    record = await record_of(stack, result.call_sid)
    assert record.outcome == "completed"
    [message] = await stack.services.store.list_messages("acme-dental")
    assert (message.name, message.phone, message.message, message.call_sid) == (
        "Dana Levi", "+15550001111", "Please call me back", result.call_sid)
    async with httpx.AsyncClient(base_url=stack.server.url) as http:
        listed = (await http.get("/api/messages", params={"business": "acme-dental"})).json()
    assert [m["message"] for m in listed] == ["Please call me back"]


async def test_tool_calls_and_errors_are_counted_on_metrics(stack: Stack) -> None:
    # The model takes a message with nothing in it: the tool answers with an error.
    stack.engine.tool_script = [
        ScriptedToolCall(1, "take_message", {"name": "", "phone": "", "message": ""})]
    result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER,
                                    script=ask("Can you take a message?"))
    record = await record_of(stack, result.call_sid)
    done = [s.detail for s in record.timeline if s.stage == "tool_done"]
    assert [detail.split(" ")[:2] for detail in done] == [["take_message:", "error"]]
    async with httpx.AsyncClient(base_url=stack.server.url) as http:
        scraped = samples((await http.get("/metrics")).text)
    assert scraped[("hotline_tool_calls_total", ())] == 1
    assert scraped[("hotline_tool_errors_total", ())] == 1
    assert scraped[("hotline_draining", ())] == 0


async def test_check_hours_answers_from_the_opening_hours_and_the_agent_replies(
        stack: Stack) -> None:
    stack.engine.tool_script = [ScriptedToolCall(1, "check_hours", {}, speak_first=False)]
    result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER,
                                    script=ask("Are you open now?"))
    session = await stack.engine.wait_for_session()
    [output] = function_outputs(session)
    answer = orjson.loads(output["output"])
    assert {"open_now", "local_time", "week"} <= set(answer)
    assert answer["week"]["Monday"] == "08:00-18:00"
    # The tool's answer went in, then a response to speak it, and the agent spoke again.
    output_at = next(at for at, e in received(session, "conversation.item.create")
                     if e["item"]["type"] == "function_call_output")  # type: ignore[index]
    assert any(at > output_at for at, _ in received(session, "response.create"))
    assert result.played_ms > 0 and session.errors_sent == []


@pytest.fixture
async def tool_service() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A business's own HTTP tool: verifies Hotline's signature, answers JSON."""
    seen: list[dict[str, Any]] = []

    async def lookup(request: Request) -> JSONResponse:
        body = await request.body()
        ok = verify_tool_signature(TOOL_SECRET, request.headers[TIMESTAMP_HEADER], body,
                                   request.headers[SIGNATURE_HEADER], now=time.time())
        if not ok:
            return JSONResponse({"error": "bad signature"}, status_code=401)
        seen.append(orjson.loads(body))
        if seen[-1]["arguments"].get("phone") == "fail":
            return JSONResponse({"error": "boom"}, status_code=500)
        return JSONResponse({"booking": "Tuesday 10:00 with Dr. Cohen"})

    async with LocalServer(Starlette(routes=[Route("/lookup", lookup, methods=["POST"])])) as url:
        yield url + "/lookup", seen


@pytest.mark.parametrize("phone", ["+15550001111", "fail"])
async def test_http_tool_is_called_signed_and_its_reply_or_error_reaches_the_model(
        sqlite_url: str, tmp_path: Path, tool_service: tuple[str, list[dict[str, Any]]],
        phone: str) -> None:
    url, seen = tool_service
    lookup = HttpTool("lookup_booking", "Find the caller's booking.", url,
                      {"type": "object", "properties": {"phone": {"type": "string"}},
                       "required": ["phone"]}, timeout_s=5)
    async with control_stack(sqlite_url, tmp_path, [business(http_tools=(lookup,))],
                             greeting_cache=False, tool_signing_secret=TOOL_SECRET) as stack:
        stack.engine.tool_script = [ScriptedToolCall(1, "lookup_booking", {"phone": phone},
                                                     speak_first=False)]
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER,
                                        script=ask("When is my appointment?"))
        session = await stack.engine.wait_for_session()
        [request] = seen
        assert request == {"tool": "lookup_booking", "arguments": {"phone": phone},
                           "call_sid": result.call_sid, "business": "acme-dental"}
        [output] = function_outputs(session)
        answer = orjson.loads(output["output"])
        if phone == "fail":
            assert "error" in answer  # the model hears the failure; the call goes on
        else:
            assert answer == {"result": {"booking": "Tuesday 10:00 with Dr. Cohen"}}
        assert result.played_ms > 0 and result.ended_by == "phone"
        record = await record_of(stack, result.call_sid)
        assert record.outcome == "completed"


# -- DTMF ---------------------------------------------------------------------------------
async def test_pressed_keys_reach_the_model_and_a_mapped_key_transfers(
        sqlite_url: str, tmp_path: Path) -> None:
    shop = business(dtmf_actions=(("0", "transfer_to_human"),))
    async with control_stack(sqlite_url, tmp_path, [shop], greeting_cache=False) as stack:
        script = CallScript([WaitForAgentSilence(quiet_ms=400, timeout_ms=20_000),
                             Dtmf("5"), WaitForAgentAudio(played_ms=200, timeout_ms=20_000),
                             WaitForAgentSilence(quiet_ms=400, timeout_ms=20_000),
                             Dtmf("0"), Silence(30_000), Hangup()])
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=script)
        session = await stack.engine.wait_for_session()
        texts = [e["item"]["content"][0].get("text") for _, e in  # type: ignore[index]
                 received(session, "conversation.item.create")
                 if e["item"].get("role") == "user"]  # type: ignore[union-attr]
        assert texts == ["The caller pressed the key 5."]  # 0 is an action, not a turn
        [update] = updates_for(stack, result.call_sid)
        assert TRANSFER_NUMBER in update.params["Twiml"]
        assert result.dial_numbers == [TRANSFER_NUMBER]
        record = await record_of(stack, result.call_sid)
        assert record.outcome == "transferred"
        pressed = [t.text for t in record.transcript if t.speaker == "caller"]
        assert pressed == ["[pressed 5]", "[pressed 0]"]


# -- answering machines ---------------------------------------------------------------------
VOICEMAIL = "Hi {name}, this is Acme Dental. Please call us back to confirm tomorrow."


async def place_reminder(stack: Stack, to: str) -> str:
    async with httpx.AsyncClient(base_url=stack.server.url) as http:
        response = await http.post("/api/calls", json={
            "business": "acme-dental", "to": to, "template": "reminder",
            "variables": {"name": "Dana"}})
    assert response.status_code == 201, response.text
    return str(response.json()["call_sid"])


def reminder(timing: GreetingTiming | None = None,
             greeting: str = "Hi {name}, this is Acme Dental calling.") -> TemplateConfig:
    return TemplateConfig("reminder", greeting,
                          "Remind {name} of tomorrow's appointment.",
                          voicemail_template=VOICEMAIL, greeting_timing=timing)


async def call_an_answering_machine(stack: Stack) -> tuple[str, PhoneCallResult]:
    """An outbound reminder answered by a machine (message, beep; DetectMessageEnd)."""
    callee = "+15550003333"
    stack.twilio.answered_by[callee] = "machine_end_beep"
    stack.twilio.callee_scripts[callee] = CallScript.answering_machine()
    call_sid = await place_reminder(stack, callee)
    result = await stack.twilio.wait_for_call(call_sid, timeout=60)
    assert result.amd_answered_by == "machine_end_beep"
    return call_sid, result


async def voicemail_left_then_hung_up(stack: Stack, call_sid: str,
                                      result: PhoneCallResult) -> Any:
    """The call was hung up through Twilio's API once the voicemail had played."""
    [update] = updates_for(stack, call_sid)
    assert update.params["Status"] == "completed"
    assert last_mark_echo(result) <= update.at
    record = await record_of(stack, call_sid)
    assert record.outcome == "voicemail"
    return record


@pytest.mark.parametrize("greeting_cache", [False, True])
async def test_held_for_the_verdict_a_machine_hears_nothing_before_the_beep(
        sqlite_url: str, tmp_path: Path, greeting_cache: bool) -> None:
    template = reminder(GreetingTiming.AFTER_AMD)
    async with control_stack(sqlite_url, tmp_path, [business(templates=(template,))],
                             greeting_cache=greeting_cache) as stack:
        call_sid, result = await call_an_answering_machine(stack)
        assert result.beep_ended_at is not None and result.media_received
        assert min(m.at for m in result.media_received) >= result.beep_ended_at
        assert result.played_ms > 1000  # the voicemail was heard
        record = await voicemail_left_then_hung_up(stack, call_sid, result)
        assert "Please call us back" in record.transcript[0].text
        assert "amd_waiting" in stages_of(record) and "voicemail_started" in stages_of(record)


@pytest.mark.parametrize("registry", ["memory", "redis"])
async def test_held_for_the_verdict_a_human_is_greeted_as_soon_as_it_comes(
        sqlite_url: str, tmp_path: Path, registry: str) -> None:
    settings: dict[str, Any] = {}
    if registry == "redis":  # the verdict travels through Redis pub/sub to the call
        settings["redis_url"] = await reachable_redis_url()
    held = business(greeting_timing=GreetingTiming.AFTER_AMD)
    async with control_stack(sqlite_url, tmp_path, [held], greeting_cache=False,
                             **settings) as stack:
        await greet_a_human(stack)


async def greet_a_human(stack: Stack) -> None:
    stack.twilio.amd_ms = 300
    call_sid = await place_reminder(stack, "+15550002222")
    result = await stack.twilio.wait_for_call(call_sid, timeout=30)
    assert result.amd_answered_by == "human" and result.amd_callback_at is not None
    assert result.media_received
    assert min(m.at for m in result.media_received) >= result.amd_callback_at
    record = await record_of(stack, call_sid)
    assert record.outcome == "completed" and "Hi Dana" in record.transcript[0].text
    # Greeted on the verdict, not on the cap (1500 ms).
    stages = {s.stage: s.ms for s in record.timeline}
    assert "amd_cap_reached" not in stages
    assert stages["amd_verdict"] <= stages["greeting_requested"]


async def test_a_late_verdict_does_not_hold_the_greeting_past_the_cap(
        sqlite_url: str, tmp_path: Path) -> None:
    held = business(greeting_timing=GreetingTiming.AFTER_AMD)
    async with control_stack(sqlite_url, tmp_path, [held], greeting_cache=False,
                             amd_greeting_cap_ms=300) as stack:
        stack.twilio.amd_ms = 5000
        call_sid = await place_reminder(stack, "+15550002222")
        result = await stack.twilio.wait_for_call(call_sid, timeout=30)
        assert result.media_received
        record = await record_of(stack, call_sid)
        assert "amd_cap_reached" in stages_of(record)


# -- the default: the greeting at once, AMD alongside ------------------------------------------
async def post_verdict(stack: Stack, call_sid: str, answered_by: str) -> None:
    """An async AMD callback, signed, as Twilio posts it."""
    async with httpx.AsyncClient() as http:
        response = await send_twilio_request(
            http, f"{stack.server.url}/twilio/amd",
            {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "AnsweredBy": answered_by},
            auth_token=AUTH_TOKEN)
    assert response.status_code == 204, response.text


async def until_stage(stack: Stack, call_sid: str, stage: str) -> None:
    """Until the running call's timeline reaches `stage` (the server's own record)."""
    async with asyncio.timeout(20):
        while True:
            runner = stack.services.active_calls.get(call_sid)
            if runner is not None and stage in [s.stage for s in runner.timeline]:
                return
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("greeting_cache", [False, True])
async def test_the_greeting_starts_at_once_and_a_machine_still_gets_the_voicemail(
        sqlite_url: str, tmp_path: Path, greeting_cache: bool) -> None:
    async with control_stack(sqlite_url, tmp_path, [business(templates=(reminder(),))],
                             greeting_cache=greeting_cache) as stack:
        call_sid, result = await call_an_answering_machine(stack)
        assert result.beep_ended_at is not None and result.start_sent_at is not None
        first = min(m.at for m in result.media_received)
        assert first < result.beep_ended_at  # greeted at once, over the machine's message
        assert any(m.at >= result.beep_ended_at for m in result.media_received)
        record = await voicemail_left_then_hung_up(stack, call_sid, result)
        agent = [t.text for t in record.transcript if t.speaker == "agent"]
        # The greeting came first (the machine's message may have cut it short, as a person
        # talking over it would), and the voicemail after the beep.
        assert agent[0].startswith("Hi") and any("Please call us back" in t for t in agent)
        assert "amd_waiting" not in stages_of(record)
        assert "voicemail_started" in stages_of(record)


async def test_a_human_hears_the_greeting_before_the_verdict_and_nothing_changes(
        sqlite_url: str, tmp_path: Path) -> None:
    async with control_stack(sqlite_url, tmp_path, [business()], greeting_cache=False) as stack:
        stack.twilio.amd_ms = 4000  # after even a live greeting's first frame, under load
        call_sid = await place_reminder(stack, "+15550002222")
        result = await stack.twilio.wait_for_call(call_sid, timeout=30)
        assert result.amd_answered_by == "human" and result.amd_callback_at is not None
        assert min(m.at for m in result.media_received) < result.amd_callback_at
        assert result.clears == []
        record = await record_of(stack, call_sid)
        assert record.outcome == "completed" and "Hi Dana" in record.transcript[0].text
        stages = stages_of(record)
        assert stages.count("amd_verdict") == 1 and "agent_cut" not in stages


async def test_machine_start_then_its_beep_during_the_greeting(
        sqlite_url: str, tmp_path: Path) -> None:
    callee = "+15550005555"
    long_greeting = reminder(greeting="Hi {name}. " + LONG_GREETING)  # still playing when cut
    async with control_stack(sqlite_url, tmp_path, [business(templates=(long_greeting,))],
                             greeting_cache=False) as stack:
        stack.twilio.amd_ms = 600_000  # the verdicts come from this test
        # A machine stays on the line through any silence until the server hangs up.
        stack.twilio.callee_scripts[callee] = CallScript([Silence(60_000), Hangup()])
        call_sid = await place_reminder(stack, callee)
        await until_stage(stack, call_sid, "first_audio_to_caller")
        await post_verdict(stack, call_sid, "machine_start")
        await until_stage(stack, call_sid, "machine_answered")
        await post_verdict(stack, call_sid, "machine_start")  # repeated: ignored
        await post_verdict(stack, call_sid, "machine_end_beep")
        result = await stack.twilio.wait_for_call(call_sid, timeout=30)
        session = await stack.engine.wait_for_session()

        assert result.clears, "the greeting was not cut"
        [truncation] = session.truncations
        assert truncation.audio_end_ms <= truncation.produced_ms
        assert any(m.at >= result.clears[0].at for m in result.media_received)  # voicemail
        record = await voicemail_left_then_hung_up(stack, call_sid, result)
        stages = [s for s in stages_of(record) if s in (
            "amd_verdict", "machine_answered", "agent_cut", "voicemail_started",
            "hang_up_requested")]
        assert stages == ["amd_verdict", "agent_cut", "machine_answered", "amd_verdict",
                          "voicemail_started", "hang_up_requested"]
        greeting_turn = record.transcript[0]
        assert greeting_turn.speaker == "agent" and greeting_turn.interrupted


async def test_a_verdict_before_the_stream_starts_is_acted_on_at_start(
        sqlite_url: str, tmp_path: Path) -> None:
    callee = "+15550006666"
    async with control_stack(sqlite_url, tmp_path, [business(templates=(reminder(),))],
                             greeting_cache=False) as stack:
        stack.twilio.amd_ms = 600_000
        stack.twilio.ring_ms = 3000
        stack.twilio.callee_scripts[callee] = CallScript([Silence(20_000), Hangup()])
        call_sid = await place_reminder(stack, callee)
        await post_verdict(stack, call_sid, "machine_end_beep")  # while it rings
        result = await stack.twilio.wait_for_call(call_sid, timeout=30)
        record = await record_of(stack, call_sid)
        assert result.media_received and record.outcome == "voicemail"
        agent = [t.text for t in record.transcript if t.speaker == "agent"]
        assert agent and "Please call us back" in agent[0]
        assert not any("this is Acme Dental calling" in t for t in agent)  # no greeting


async def test_a_verdict_for_a_call_that_has_ended_changes_nothing(stack: Stack) -> None:
    stack.twilio.amd_ms = 600_000
    call_sid = await place_reminder(stack, "+15550007777")
    await stack.twilio.wait_for_call(call_sid, timeout=30)
    record = await record_of(stack, call_sid)
    await post_verdict(stack, call_sid, "machine_end_beep")
    assert (await record_of(stack, call_sid)).outcome == record.outcome == "completed"
    await assert_nothing_leaked(stack)


# -- silence and limits ----------------------------------------------------------------------
async def test_silence_gets_one_nudge_then_a_goodbye_and_a_hang_up(
        sqlite_url: str, tmp_path: Path) -> None:
    async with control_stack(sqlite_url, tmp_path, [business()], greeting_cache=False,
                             silence_nudge_s=1.0, silence_hangup_s=3.0) as stack:
        script = CallScript([Silence(60_000), Hangup()])
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=script)
        session = await stack.engine.wait_for_session()
        asked = [e.get("response", {}).get("instructions")  # type: ignore[union-attr]
                 for _, e in received(session, "response.create")]
        assert asked == [None, NUDGE_INSTRUCTIONS, SILENCE_GOODBYE_INSTRUCTIONS]
        [update] = updates_for(stack, result.call_sid)
        assert update.params["Status"] == "completed" and last_mark_echo(result) <= update.at
        record = await record_of(stack, result.call_sid)
        assert record.outcome == "hung_up_by_agent"
        assert [t.speaker for t in record.transcript] == ["agent", "agent", "agent"]


async def test_the_business_time_limit_ends_the_call_politely(
        sqlite_url: str, tmp_path: Path) -> None:
    async with control_stack(sqlite_url, tmp_path, [business(max_call_duration_s=5)],
                             greeting_cache=False) as stack:
        script = CallScript([WaitForAgentSilence(quiet_ms=300, timeout_ms=20_000),
                             *[step for _ in range(6) for step in (
                                 Say("Tell me more please."),
                                 WaitForAgentSilence(quiet_ms=300, timeout_ms=20_000))],
                             Silence(30_000), Hangup()])
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=script)
        [update] = updates_for(stack, result.call_sid)
        assert update.params["Status"] == "completed"
        record = await record_of(stack, result.call_sid)
        assert record.outcome == "hung_up_by_agent"
        closing = next(s for s in record.timeline if s.stage == "closing")
        assert closing.detail.startswith("time limit")


# -- echo and barge-in -------------------------------------------------------------------------
@pytest.mark.parametrize(("burst_ms", "cuts"), [(100, False), (400, True)])
async def test_only_sound_long_enough_to_be_speech_cuts_the_agent_off(
        sqlite_url: str, tmp_path: Path, burst_ms: int, cuts: bool) -> None:
    async with control_stack(sqlite_url, tmp_path, [business(greeting=LONG_GREETING)],
                             greeting_cache=False) as stack:
        script = CallScript([WaitForAgentAudio(played_ms=1000, timeout_ms=20_000),
                             Tone(burst_ms), WaitForAgentSilence(quiet_ms=600), Hangup()])
        result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=script)
        session = await stack.engine.wait_for_session()
        assert bool(result.clears) is cuts
        assert bool(session.truncations) is cuts
        assert session.errors_sent == []
        record = await record_of(stack, result.call_sid)
        assert ("barge_in" in stages_of(record)) is cuts
        assert ("noise_ignored" in stages_of(record)) is not cuts


async def test_speech_after_all_audio_played_truncates_nothing(stack: Stack) -> None:
    script = CallScript([WaitForAgentSilence(quiet_ms=600, timeout_ms=20_000),
                         Say("Hello, I have a question about my appointment."),
                         WaitForAgentAudio(played_ms=200, timeout_ms=20_000),
                         WaitForAgentSilence(quiet_ms=600, timeout_ms=20_000), Hangup()])
    result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=script)
    session = await stack.engine.wait_for_session()
    assert result.clears == [] and session.truncations == []
    assert received(session, "conversation.item.truncate") == []
    assert session.errors_sent == []
    record = await record_of(stack, result.call_sid)
    assert [t.speaker for t in record.transcript][:3] == ["agent", "caller", "agent"]


async def test_amd_callbacks_must_be_signed_and_complete(stack: Stack) -> None:
    url = f"{stack.server.url}/twilio/amd"
    params = {"CallSid": "CA" + "3" * 32, "AccountSid": ACCOUNT_SID}
    async with httpx.AsyncClient() as http:
        forged = await http.post(url, data={**params, "AnsweredBy": "human"},
                                 headers={"X-Twilio-Signature": "forged"})
        missing = await send_twilio_request(http, url, params, auth_token=AUTH_TOKEN)
        ok = await send_twilio_request(http, url, {**params, "AnsweredBy": "human"},
                                       auth_token=AUTH_TOKEN)
    assert forged.status_code == 403
    assert missing.status_code == 400 and "AnsweredBy" in missing.text
    assert ok.status_code == 204
    # Kept for a stream that has not started yet.
    assert await stack.services.registry.take_signal(params["CallSid"], "amd") == "human"


@pytest.mark.parametrize(("answer", "outcome"), [("no-answer", "no_answer"), ("busy", "no_answer"),
                                                 ("failed", "failed")])
async def test_an_unanswered_outbound_call_gets_its_outcome_from_twilio(
        stack: Stack, answer: str, outcome: str) -> None:
    callee = "+15550004444"
    stack.twilio.outcomes[callee] = answer
    call_sid = await place_reminder(stack, callee)
    result = await stack.twilio.wait_for_call(call_sid, timeout=30)
    assert result.final_status == answer and result.stream_sid is None
    record = await record_of(stack, call_sid)  # from the final status callback
    assert record.outcome == outcome
    await assert_nothing_leaked(stack)
