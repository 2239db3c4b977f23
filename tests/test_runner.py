"""The call runner over in-memory transports: the real call core, no sockets, no sleeps.

`FakeTwilio` is the ASGI side of the media stream's WebSocket (what the phone sends is
queued as ASGI messages; what the runner sends is recorded) and `FakeEngine` is a realtime
connection (`send_raw` / `recv_bytes` / `close`, backed by queues). They are transports,
not mocks: every decision is the `CallSession`'s. Only the runner's public surface is used
(`CallRunner(...)`, `run`, `deliver`, `timeline`, `transcript`); assertions are on wire
messages and timeline stage names. Timers are a few tens of ms; every wait is for an
observable result, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close

from hotline.call.runner import CallClock, CallRunner
from hotline.core.events import TwilioDtmf, TwilioStart
from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord
from hotline.engine.warm import EngineHandle
from hotline.logs import CallLog
from hotline.plan import CallPlan
from hotline.prompts import NUDGE_INSTRUCTIONS
from hotline.tools import Toolbox
from hotline.tools.outcome import ToolOutcome
from tests.factories import make_plan

WAIT_S = 2.0  # the most any awaited result may take; each test takes milliseconds
STREAM_SID = "MZ" + "a" * 32
PAYLOAD = "f" * 160  # 120 bytes of μ-law silence, base64


# -- transports ---------------------------------------------------------------------------
class FakeTwilio:
    """The media stream's WebSocket as the runner sees it: raw ASGI messages."""

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._receiving = 0
        self.sent: list[dict[str, Any]] = []

    # what the phone does
    def send_event(self, message: dict[str, Any]) -> None:
        self.send_text(orjson.dumps(message).decode())

    def send_text(self, text: str) -> None:
        self._inbox.put_nowait({"type": "websocket.receive", "text": text})

    def send_bytes(self, data: bytes) -> None:
        self._inbox.put_nowait({"type": "websocket.receive", "bytes": data})

    def media(self, count: int = 1) -> None:
        for n in range(count):
            self.send_event({"event": "media", "streamSid": STREAM_SID,
                             "media": {"track": "inbound", "chunk": str(n),
                                       "timestamp": str(20 * n), "payload": PAYLOAD}})

    def dtmf(self, digit: str) -> None:
        self.send_event({"event": "dtmf", "streamSid": STREAM_SID,
                         "dtmf": {"track": "inbound_track", "digit": digit}})

    def disconnect(self) -> None:
        self._inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})

    def idle(self) -> bool:
        """Everything sent so far has been read, and the runner waits for more."""
        return self._receiving > 0 and self._inbox.empty()

    # what the runner sees
    async def receive(self) -> dict[str, Any]:
        self._receiving += 1
        try:
            return await self._inbox.get()
        finally:
            self._receiving -= 1

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def events(self) -> list[str]:
        return [orjson.loads(m["text"])["event"] for m in self.sent
                if m["type"] == "websocket.send"]

    @property
    def closed_by_us(self) -> bool:
        return any(m["type"] == "websocket.close" for m in self.sent)


class FakeEngine:
    """A realtime engine connection: what the runner sends is recorded (parsed); what the
    engine says is queued; `drop()` closes the socket from the engine's side."""

    def __init__(self, close_held: asyncio.Future[None] | None = None) -> None:
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._gone = False
        self._close_held = close_held  # `close` returns once it resolves
        self.received: list[dict[str, Any]] = []
        self.closing = self.closed = False

    def say(self, event: dict[str, Any]) -> None:
        self._outbox.put_nowait(orjson.dumps(event))

    def drop(self) -> None:
        self._outbox.put_nowait(None)

    async def send_raw(self, data: str) -> None:
        if self._gone:
            raise ConnectionClosedError(None, None)
        self.received.append(orjson.loads(data))

    async def recv_bytes(self) -> bytes:
        data = await self._outbox.get()
        if data is None:
            self._gone = True
            raise ConnectionClosedOK(Close(1000, ""), Close(1000, ""), rcvd_then_sent=True)
        return data

    async def close(self, *, code: int = 1000, reason: str = "") -> None:
        self._gone = self.closing = True
        if self._close_held is not None:
            await self._close_held
        self.closed = True

    def types(self) -> list[str]:
        return [str(e["type"]) for e in self.received]


Opener = Callable[[CallPlan], Awaitable[EngineHandle]]


def opener(engine: FakeEngine, until: asyncio.Future[None] | None = None) -> Opener:
    """`open_engine` for the runner: this engine, once `until` (if given) resolves."""

    async def open_engine(plan: CallPlan) -> EngineHandle:
        if until is not None:
            await until
        return EngineHandle(engine, "cold")

    return open_engine


class RaisingToolbox(Toolbox):
    """A toolbox whose plumbing is broken: `run` raises (the real one never does)."""

    def __init__(self) -> None:  # no plan, no HTTP client: nothing is used
        pass

    async def run(self, name: str, arguments_json: str, *, taken_ms: int) -> ToolOutcome:
        raise RuntimeError("toolbox broken")


# -- harness ------------------------------------------------------------------------------
@dataclass
class Call:
    plan: CallPlan = field(default_factory=make_plan)
    twilio: FakeTwilio = field(default_factory=FakeTwilio)
    engine: FakeEngine = field(default_factory=FakeEngine)
    open_engine: Opener | None = None
    toolbox: Toolbox | None = None
    reopen_engine: Opener | None = None  # None: a drop mid-call ends the call
    connect_budget_s: float = 1.0

    def __post_init__(self) -> None:
        log = CallLog(logging.getLogger("hotline.call"), {"call_sid": self.plan.call_sid})
        self.clock = CallClock(time.time() * 1000)
        self.runner = CallRunner(self.plan, self.twilio,
                                 self.open_engine or opener(self.engine), log, self.clock,
                                 toolbox=self.toolbox, reopen_engine=self.reopen_engine,
                                 connect_budget_s=self.connect_budget_s)

    @property
    def start(self) -> TwilioStart:
        return TwilioStart(STREAM_SID, self.plan.call_sid, "AC" + "0" * 32,
                           {"token": self.plan.token})

    def stages(self) -> list[str]:
        return [s.stage for s in self.runner.timeline]


@contextlib.asynccontextmanager
async def running(call: Call) -> AsyncIterator[asyncio.Task[CallRecord]]:
    """The call's `run` as a task; cancelled on the way out if a test left it running."""
    task = asyncio.create_task(call.runner.run(call.start, datetime.now(UTC)))
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until(condition: Callable[[], bool], what: str) -> None:
    """Until `condition` holds (it reads what the transports or the runner recorded), within
    WAIT_S. It is checked every millisecond: the runner's timeline is a plain list, with no
    event to wait on, and a timer's effects may show only there."""
    try:
        async with asyncio.timeout(WAIT_S):
            while not condition():  # noqa: ASYNC110 (nothing to wait on but the result)
                await asyncio.sleep(0.001)
    except TimeoutError:
        pytest.fail(f"not within {WAIT_S} s: {what}")


async def ended(task: asyncio.Task[CallRecord]) -> CallRecord:
    try:
        return await asyncio.wait_for(asyncio.shield(task), WAIT_S)
    except TimeoutError:
        pytest.fail(f"the call did not end within {WAIT_S} s")


def response_creates(engine: FakeEngine) -> list[dict[str, Any]]:
    return [e for e in engine.received if e["type"] == "response.create"]


def engine_has(engine: FakeEngine, type_: str, count: int = 1) -> bool:
    return engine.types().count(type_) >= count


# -- the engine backlog -------------------------------------------------------------------
async def test_engine_bound_messages_wait_in_order_while_the_engine_connects() -> None:
    connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    call = Call(engine=(engine := FakeEngine()), open_engine=opener(engine, connected))
    async with running(call) as task:
        # Bot speaks first: `start` asks for the greeting; then the caller's audio, and a key.
        call.twilio.media(3)
        call.twilio.dtmf("5")
        # The Twilio pump read all of it without waiting for the engine.
        await until(call.twilio.idle, "the Twilio pump reads on while the engine connects")
        assert engine.received == [] and not task.done()
        assert "[pressed 5]" in [t.text for t in call.runner.transcript]

        connected.set_result(None)
        await until(lambda: len(engine.received) == 5, "the backlog is sent")
        assert engine.types() == ["response.create", "input_audio_buffer.append",
                                  "input_audio_buffer.append", "input_audio_buffer.append",
                                  "conversation.item.create"]
        assert engine.received[-1]["item"]["content"][0]["text"] == (
            "The caller pressed the key 5.")
        assert "engine_ready" in call.stages()

        # Once connected, messages go straight out, after the backlog.
        call.twilio.media(1)
        await until(lambda: len(engine.received) == 6, "live audio after the backlog")
        assert engine.types()[-1] == "input_audio_buffer.append"

        call.twilio.disconnect()
        record = await ended(task)
    assert record.outcome == Outcome.COMPLETED


# -- failures end the call ----------------------------------------------------------------
LOUD_PAYLOAD = "EBAQ" * 40  # 120 bytes of loud μ-law, base64


def echo_marks(twilio: FakeTwilio) -> None:
    """Twilio echoes every mark sent so far: the audio before them has played."""
    for message in twilio.sent:
        event = orjson.loads(message["text"]) if message["type"] == "websocket.send" else {}
        if event.get("event") == "mark":
            twilio.send_event({"event": "mark", "streamSid": STREAM_SID,
                               "mark": {"name": event["mark"]["name"]}})


async def test_engine_connection_failure_apologises_and_takes_a_message() -> None:
    failing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    call = Call(engine=(engine := FakeEngine()), open_engine=opener(engine, failing))
    async with running(call) as task:
        call.twilio.media(2)  # while connecting: backlog that will never be sent
        await until(call.twilio.idle, "the stream is under way")
        failing.set_exception(OSError("connection refused"))
        await until(lambda: "apology_started" in call.stages(), "the apology plays")
        assert "media" in call.twilio.events() and not task.done()  # the call goes on
        echo_marks(call.twilio)  # the apology and the tone have played
        await until(lambda: "message_recording" in call.stages(), "the message is recorded")
        for n in range(20):
            call.twilio.send_event({"event": "media", "streamSid": STREAM_SID,
                                    "media": {"track": "inbound", "chunk": str(n),
                                              "timestamp": str(20 * n),
                                              "payload": LOUD_PAYLOAD}})
        call.twilio.dtmf("#")  # the end of the message; no REST client here: the stream ends
        record = await ended(task)
    assert record.outcome == Outcome.ENGINE_UNAVAILABLE
    stages = call.stages()
    assert "engine_failed" in stages and "engine_ready" not in stages
    assert stages.index("stream_start") < stages.index("engine_failed")
    assert "connection refused" in record.timeline[stages.index("engine_failed")].detail
    assert stages.index("engine_unavailable") < stages.index("apology_started")
    assert "message_recorded" in stages and stages[-1] == "call_ended"
    [message] = record.messages
    assert message.audio_file and message.audio_ms == 20 * 120 // 8
    [audio] = call.runner.message_audio
    assert audio.audio_file == message.audio_file and len(audio.payloads_b64) == 20
    assert engine.received == []
    assert call.twilio.closed_by_us  # we hung up the stream


async def test_an_engine_that_fails_at_once_apologises_until_the_caller_leaves() -> None:
    async def refuse(plan: CallPlan) -> EngineHandle:
        raise OSError("connection refused")

    call = Call(open_engine=refuse)
    async with running(call) as task:
        await until(lambda: "apology_started" in call.stages(), "the apology plays")
        call.twilio.disconnect()
        record = await ended(task)
    assert record.outcome == Outcome.ENGINE_UNAVAILABLE
    assert "engine_failed" in call.stages() and call.stages()[-1] == "call_ended"
    assert record.messages == []


async def test_a_failing_side_task_ends_the_call() -> None:
    call = Call(toolbox=RaisingToolbox())
    async with running(call) as task:
        await until(lambda: "engine_ready" in call.stages(), "the engine is connected")
        call.engine.say({"type": "response.function_call_arguments.done",
                         "response_id": "resp_1", "item_id": "item_1", "call_id": "call_1",
                         "name": "check_hours", "arguments": "{}"})
        record = await ended(task)
    assert record.outcome == Outcome.FAILED
    stages = call.stages()
    assert "tool_called" in stages and "call_failed" in stages
    assert "toolbox broken" in record.timeline[stages.index("call_failed")].detail
    # The call's end says it failed here, not that Twilio ended it.
    assert record.timeline[-1].stage == "call_ended"
    assert record.timeline[-1].detail.startswith("call failed")
    assert call.engine.closed and call.twilio.closed_by_us


async def test_the_engine_closing_mid_call_ends_the_call() -> None:
    call = Call()
    async with running(call) as task:
        call.twilio.media(2)
        await until(lambda: engine_has(call.engine, "input_audio_buffer.append", 2),
                    "the caller's audio reaches the engine")
        call.engine.drop()
        record = await ended(task)
    assert record.outcome == Outcome.FAILED
    assert call.stages()[-1] == "call_ended"
    assert record.timeline[-1].detail == "engine connection closed"
    assert call.twilio.closed_by_us


# -- Twilio ends the call -----------------------------------------------------------------
async def test_twilio_disconnect_returns_the_record_and_closes_the_engine() -> None:
    call = Call()
    async with running(call) as task:
        call.twilio.media(1)
        await until(lambda: engine_has(call.engine, "input_audio_buffer.append"),
                    "the caller's audio reaches the engine")
        call.twilio.disconnect()
        record = await ended(task)
    assert record.call_sid == call.plan.call_sid
    assert record.outcome == Outcome.COMPLETED
    assert record.timeline == call.runner.timeline and call.stages()[-1] == "call_ended"
    assert record.timeline[-1].detail == "call ended by Twilio"
    assert call.engine.closed
    assert not call.twilio.closed_by_us  # the socket was already gone


async def test_twilio_stop_ends_the_call_and_we_close_the_socket() -> None:
    call = Call()
    async with running(call) as task:
        call.twilio.send_event({"event": "stop", "streamSid": STREAM_SID,
                                "stop": {"accountSid": "AC" + "0" * 32,
                                         "callSid": call.plan.call_sid}})
        record = await ended(task)
    assert record.outcome == Outcome.COMPLETED
    assert call.engine.closed and call.twilio.closed_by_us


# -- malformed input ----------------------------------------------------------------------
async def test_a_malformed_twilio_message_is_skipped_and_the_call_goes_on() -> None:
    call = Call()
    async with running(call) as task:
        call.twilio.send_text("not json")
        call.twilio.send_event({"event": "media", "streamSid": STREAM_SID})  # no "media"
        call.twilio.send_event({"event": "dtmf", "dtmf": {"digit": "x"}})  # not a key
        call.twilio.send_bytes(b"\x00\x01")  # the protocol is JSON text
        call.twilio.send_event({"event": "something_new"})  # well-formed, unknown: ignored
        call.twilio.dtmf("7")
        await until(lambda: engine_has(call.engine, "conversation.item.create"),
                    "the key after the bad messages reaches the engine")
        assert not task.done()
        assert [t.text for t in call.runner.transcript] == ["[pressed 7]"]
        call.twilio.disconnect()
        record = await ended(task)
    assert record.outcome == Outcome.COMPLETED


# -- timers -------------------------------------------------------------------------------
async def test_the_silence_timer_fires_and_the_engine_is_asked_for_a_nudge() -> None:
    # The caller speaks first: the silence count starts at `start`.
    call = Call(plan=make_plan(bot_speaks_first=False, silence_nudge_ms=30,
                               silence_hangup_ms=5_000))
    async with running(call) as task:
        await until(lambda: bool(response_creates(call.engine)), "the nudge")
        (nudge,) = response_creates(call.engine)
        assert nudge["response"]["instructions"] == NUDGE_INSTRUCTIONS
        assert "silence_nudge" in call.stages()
        call.twilio.disconnect()
        await ended(task)


async def test_a_cancelled_timer_does_not_fire() -> None:
    # The caller speaks first, so the silence count starts at `start`; a key pressed at once
    # (read in the same turn of the loop, before any timer can run) cancels it, and the
    # reply's end starts it again. The nudge comes a full count after the restart, once.
    nudge_ms = 60
    call = Call(plan=make_plan(bot_speaks_first=False, silence_nudge_ms=nudge_ms,
                               silence_hangup_ms=nudge_ms + 30))
    call.twilio.dtmf("1")
    async with running(call) as task:
        await until(lambda: len(response_creates(call.engine)) == 1, "the reply is asked for")
        restarted_ms = call.clock.now_ms()
        call.engine.say({"type": "response.created", "response": {"id": "resp_1"}})
        call.engine.say({"type": "response.done",
                         "response": {"id": "resp_1", "status": "completed"}})
        # The silence hang-up, due after the nudge, shows the nudge's moment has passed.
        await until(lambda: "closing" in call.stages(), "the silence hang-up")
        nudges = [s for s in call.runner.timeline if s.stage == "silence_nudge"]
        assert len(nudges) == 1
        assert nudges[0].ms >= restarted_ms + nudge_ms
        call.twilio.disconnect()
        await ended(task)
    assert "silence" in call.runner.timeline[call.stages().index("closing")].detail


async def test_no_timer_fires_after_the_call_ended() -> None:
    # A broken side task ends the call while the silence timers run; the engine socket then
    # takes a while to close, past the timers' deadlines. The core has not been told the
    # call is over yet (that comes once the sockets are closed): a timer that still fired
    # here would act on a live call.
    nudge_ms = 50
    close_held: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    call = Call(plan=make_plan(bot_speaks_first=False, silence_nudge_ms=nudge_ms,
                               silence_hangup_ms=nudge_ms + 10),
                engine=FakeEngine(close_held), toolbox=RaisingToolbox())
    # Queued before the call starts: the tool runs a few turns of the loop after `start`.
    call.engine.say({"type": "response.function_call_arguments.done",
                     "response_id": "resp_1", "item_id": "item_1", "call_id": "call_1",
                     "name": "check_hours", "arguments": "{}"})
    before = asyncio.all_tasks()
    async with running(call) as task:
        await until(lambda: call.engine.closing, "the call ends and closes the engine")
        engine_sent = list(call.engine.received)
        # An event from outside after the end (e.g. a late AMD verdict) is dropped too.
        call.runner.deliver(TwilioDtmf("9"))
        # Waiting out the timers' deadlines: this checks that nothing happens, so there is
        # no result to wait for.
        await asyncio.sleep((nudge_ms + 10 + 30) / 1000)
        close_held.set_result(None)
        record = await ended(task)
    assert "call_failed" in call.stages()
    assert "silence_nudge" not in call.stages() and "closing" not in call.stages()
    assert "[pressed 9]" not in [t.text for t in record.transcript]
    assert call.engine.received == engine_sent
    assert asyncio.all_tasks() <= before  # no task left behind by the call
