"""The runner's engine link over in-memory transports: connect retries within the budget,
and a drop mid-call resumed on a new session, the replay ahead of the caller's audio that
waited. (The transports and harness are tests/test_runner.py's.)"""

from __future__ import annotations

import asyncio
import base64
import time

import orjson
import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close

import hotline.call.runner as runner_module
from hotline.call.runner import EngineOpener
from hotline.core.outcomes import Outcome
from hotline.engine.warm import EngineHandle
from hotline.plan import CallPlan
from tests.factories import make_plan
from tests.test_runner import (
    STREAM_SID,
    Call,
    FakeEngine,
    FakeTwilio,
    Opener,
    ended,
    engine_has,
    running,
    until,
)


class DroppingEngine(FakeEngine):
    """A FakeEngine whose `drop_abnormally` closes it as an engine failure does (1011)."""

    def drop_abnormally(self) -> None:
        self._outbox.put_nowait(b"__drop_1011__")

    async def recv_bytes(self) -> bytes:
        data = await super().recv_bytes()
        if data == b"__drop_1011__":
            self._gone = True
            raise ConnectionClosedError(Close(1011, "internal error"), None)
        return data


Outcome_ = FakeEngine | Exception | asyncio.Future[None]


def sequence(*outcomes: Outcome_) -> tuple[Opener, list[float]]:
    """An opener giving each outcome in turn (an engine, a failure, or a hang until a future
    resolves); and the times it was called."""
    calls: list[float] = []
    queue = list(outcomes)

    async def open_engine(plan: CallPlan) -> EngineHandle:
        calls.append(time.monotonic())
        outcome = queue.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, asyncio.Future):
            await outcome
            raise AssertionError("a hanging connect was not cut")
        return EngineHandle(outcome, "cold")

    return open_engine, calls


def stage_detail(call: Call, stage: str) -> str:
    return next(s.detail for s in call.runner.timeline if s.stage == stage)



def reopening(*sessions: FakeEngine,
              path: str = "resume") -> tuple[asyncio.Future[None], EngineOpener]:
    """An engine opener that hands out `sessions` in order, each once the future is set
    (the test decides when a session may come)."""
    go: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiting = list(sessions)

    async def open_engine(plan: CallPlan) -> EngineHandle:
        await go
        return EngineHandle(waiting.pop(0), path)

    return go, open_engine

async def test_a_failed_connect_is_retried_at_once_and_the_call_goes_on() -> None:
    engine = FakeEngine()
    open_engine, calls = sequence(OSError("503"), OSError("refused"), engine)
    call = Call(engine=engine, open_engine=open_engine)
    async with running(call) as task:
        await until(lambda: "engine_ready" in call.stages(), "the third attempt connects")
        call.twilio.media(2)
        await until(lambda: engine_has(engine, "input_audio_buffer.append", 2), "audio flows")
        call.twilio.disconnect()
        record = await ended(task)
    assert len(calls) == 3
    assert calls[2] - calls[0] < 0.5  # at once: no back-off
    assert call.stages().count("engine_connect_failed") == 2
    assert engine.types()[0] == "response.create"  # the greeting asked for, on the 3rd
    assert record.outcome == Outcome.COMPLETED
    assert record.stats["engine_connects"] == 1
    assert record.stats["engine_connect_failures"] == 2


async def test_three_failures_make_the_engine_unavailable() -> None:
    open_engine, calls = sequence(OSError("a"), OSError("b"), OSError("c"), FakeEngine())
    call = Call(open_engine=open_engine)
    async with running(call) as task:
        await until(lambda: "apology_started" in call.stages(), "the apology plays")
        call.twilio.disconnect()
        record = await ended(task)
    assert len(calls) == 3
    assert record.outcome == Outcome.ENGINE_UNAVAILABLE
    assert record.stats["engine_connect_failures"] == 3
    assert "engine_failed" in call.stages()


async def test_a_hanging_connect_is_cut_at_the_budget() -> None:
    hang: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    open_engine, calls = sequence(hang, FakeEngine())
    call = Call(open_engine=open_engine, connect_budget_s=0.2)
    async with running(call) as task:
        await until(lambda: "apology_started" in call.stages(), "the apology plays")
        elapsed = time.monotonic() - calls[0]
        call.twilio.disconnect()
        record = await ended(task)
    assert 0.15 < elapsed < 1.5  # cut near the budget (generous: a shared machine)
    assert len(calls) == 1  # the budget is spent: no attempt after it
    assert record.outcome == Outcome.ENGINE_UNAVAILABLE
    assert "within 200 ms" in stage_detail(call, "engine_failed")


async def greeted_then_dropped(call: Call, first: DroppingEngine) -> None:
    """The live greeting ("Hello, Acme here.") is said and done, then the engine drops."""
    await until(lambda: engine_has(first, "response.create"), "the greeting is asked")
    first.say({"type": "response.created", "response": {"id": "r1"}})
    first.say({"type": "response.output_audio.delta", "response_id": "r1",
               "item_id": "i1", "delta": "f" * 160})
    first.say({"type": "response.output_audio_transcript.done", "response_id": "r1",
               "item_id": "i1", "transcript": "Hello, Acme here."})
    first.say({"type": "response.done", "response": {"id": "r1", "status": "completed"}})
    await until(lambda: "greeting_done" in call.stages(), "the greeting is done")
    first.drop_abnormally()
    await until(lambda: "engine_lost" in call.stages(), "the drop is seen")


async def test_a_drop_mid_call_resumes_with_the_replay_before_the_waiting_audio() -> None:
    first, second = DroppingEngine(), FakeEngine()
    reopened, reopen = reopening(second)

    twilio = FakeTwilio()
    call = Call(engine=first, twilio=twilio, reopen_engine=reopen)
    async with running(call) as task:
        await greeted_then_dropped(call, first)
        twilio.media(3)  # the caller speaks while the engine is away
        await until(twilio.idle, "the Twilio pump reads on")
        assert second.received == []
        reopened.set_result(None)
        await until(lambda: engine_has(second, "input_audio_buffer.append", 3),
                    "the waiting audio reaches the new session")
        types = second.types()
        # the greeting replayed as an assistant message, the audio after it
        assert types[0] == "conversation.item.create"
        assert second.received[0]["item"]["role"] == "assistant"
        assert second.received[0]["item"]["content"] == [
            {"type": "output_text", "text": "Hello, Acme here."}]
        assert types[1:] == ["input_audio_buffer.append"] * 3
        twilio.media(1)
        await until(lambda: engine_has(second, "input_audio_buffer.append", 4), "live audio")
        twilio.disconnect()
        record = await ended(task)
    assert record.outcome == Outcome.COMPLETED
    stages = call.stages()
    assert stages.index("engine_lost") < stages.index("engine_resumed")
    assert "close code 1011" in stage_detail(call, "engine_lost")
    assert "1 items replayed" in stage_detail(call, "engine_resumed")
    assert record.stats["engine_drops"] == 1 and record.stats["engine_resumes"] == 1
    assert first.closed and second.closed


class SendCutEngine(FakeEngine):
    """A new session that drops (1011) while its first messages are being sent to it."""

    def __init__(self, sends_before_drop: int) -> None:
        super().__init__()
        self._sends_left = sends_before_drop

    async def send_raw(self, data: str) -> None:
        if self._sends_left == 0:
            self._gone = True
            raise ConnectionClosedError(Close(1011, "internal error"), None)
        self._sends_left -= 1
        await super().send_raw(data)


async def test_a_drop_while_the_replay_and_waiting_audio_are_sent_loses_and_doubles_nothing(
        ) -> None:
    first, cut, third = DroppingEngine(), SendCutEngine(sends_before_drop=1), FakeEngine()
    reopened, reopen = reopening(cut, third)

    twilio = FakeTwilio()
    call = Call(engine=first, twilio=twilio, reopen_engine=reopen)
    async with running(call) as task:
        await greeted_then_dropped(call, first)
        twilio.media(3)
        await until(twilio.idle, "the Twilio pump reads on")
        reopened.set_result(None)
        await until(lambda: engine_has(third, "input_audio_buffer.append", 3),
                    "the waiting audio reaches the third session")
        twilio.disconnect()
        await ended(task)
    # The cut session took the replay and dropped as the first waiting frame went out: the
    # third gets the conversation once, then every frame that waited, none lost.
    assert cut.types() == ["conversation.item.create"]
    assert third.types() == ["conversation.item.create", *["input_audio_buffer.append"] * 3]
    assert call.stages().count("engine_resumed") == 2


async def test_a_reconnect_that_fails_makes_the_engine_unavailable() -> None:
    first = DroppingEngine()

    async def reopen(plan: CallPlan) -> EngineHandle:
        raise OSError("503 Service Unavailable")

    call = Call(engine=first, reopen_engine=reopen)
    async with running(call) as task:
        await until(lambda: "engine_ready" in call.stages(), "connected")
        first.drop_abnormally()
        await until(lambda: "apology_started" in call.stages(), "the apology plays")
        call.twilio.disconnect()
        record = await ended(task)
    assert record.outcome == Outcome.ENGINE_UNAVAILABLE
    assert call.stages().count("engine_connect_failed") == 3
    assert record.stats["engine_drops"] == 1 and record.stats["engine_resumes"] == 0


async def test_audio_waiting_for_the_engine_is_bounded_and_what_is_dropped_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "MAX_BACKLOG_AUDIO", 5)
    engine = FakeEngine()
    connected, open_engine = reopening(engine, path="cold")

    call = Call(engine=engine, open_engine=open_engine)
    async with running(call) as task:
        call.twilio.media(8)
        await until(call.twilio.idle, "read while connecting")
        connected.set_result(None)
        await until(lambda: engine_has(engine, "input_audio_buffer.append", 5), "sent")
        call.twilio.disconnect()
        record = await ended(task)
    assert engine.types().count("input_audio_buffer.append") == 5
    assert record.stats["engine_audio_dropped"] == 3
    assert orjson.dumps(record.stats)  # plain ints


async def test_the_audio_bound_counts_frames_not_appends_when_quiet_audio_is_batched(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A batched append of quiet frames (HOTLINE_QUIET_AUDIO_BATCH_MS) counts as the frames
    it holds: what waits stays ~30 s of audio, not 30 s times the batch."""
    monkeypatch.setattr(runner_module, "MAX_BACKLOG_AUDIO", 5)
    engine = FakeEngine()
    connected, open_engine = reopening(engine, path="cold")

    # The test's frames are 15 ms of quiet: three make an append of 40 ms or more.
    call = Call(plan=make_plan(quiet_audio_batch_ms=40), engine=engine,
                open_engine=open_engine)
    async with running(call) as task:
        call.twilio.media(8)  # two appends of three frames, two frames held
        await until(call.twilio.idle, "read while connecting")
        connected.set_result(None)
        await until(lambda: engine_has(engine, "input_audio_buffer.append", 1), "sent")
        call.twilio.disconnect()
        record = await ended(task)
    assert engine.types().count("input_audio_buffer.append") == 1
    assert record.stats["engine_audio_dropped"] == 3
    assert record.stats["audio_appends"] == 2 and record.stats["media_in"] == 8


async def test_a_drop_while_closing_hangs_up_without_reconnecting() -> None:
    first = DroppingEngine()
    reopens: list[float] = []

    async def reopen(plan: CallPlan) -> EngineHandle:
        reopens.append(time.monotonic())
        raise OSError("503 Service Unavailable")  # would start the apology over the goodbye

    call = Call(plan=make_plan(dtmf_actions=(("#", "end_call"),)), engine=first,
                reopen_engine=reopen)
    async with running(call) as task:
        await until(lambda: engine_has(first, "response.create"), "the greeting is asked")
        first.say({"type": "response.created", "response": {"id": "r1"}})
        first.say({"type": "response.done", "response": {"id": "r1", "status": "completed"}})
        await until(lambda: "greeting_done" in call.stages(), "the greeting is done")
        call.twilio.dtmf("#")
        await until(lambda: engine_has(first, "response.create", 2), "the goodbye is asked")
        first.drop_abnormally()  # before the goodbye is made
        record = await ended(task)  # hung up (no REST client here: the stream is closed)
    assert reopens == []
    stages = call.stages()
    assert stages.index("engine_lost") < stages.index("hang_up_requested")
    assert "apology_started" not in stages and "engine_connect_failed" not in stages
    assert record.outcome == Outcome.HUNG_UP_BY_AGENT
    assert record.stats["engine_drops"] == 1


def _quiet_frame(byte: int) -> str:
    """15 ms of one quiet μ-law code (under the gate's threshold), base64."""
    return base64.b64encode(bytes([byte]) * 120).decode()


def _audio(engine: FakeEngine) -> bytes:
    return b"".join(base64.b64decode(e["audio"]) for e in engine.received
                    if e["type"] == "input_audio_buffer.append")


async def test_quiet_audio_held_at_a_drop_follows_the_batch_that_failed_before_it() -> None:
    """The engine's close has begun (a send fails: that batch waits in the runner) while the
    pump still reads its last events; a quiet frame held meanwhile reaches the new session
    after that batch, not ahead of it."""
    first, second = DroppingEngine(), FakeEngine()
    reopened, reopen = reopening(second)

    twilio = FakeTwilio()
    call = Call(plan=make_plan(quiet_audio_batch_ms=40), engine=first, twilio=twilio,
                reopen_engine=reopen)

    def media(*frames: str) -> None:
        for payload in frames:
            twilio.send_event({"event": "media", "streamSid": STREAM_SID,
                               "media": {"track": "inbound", "chunk": "1", "timestamp": "0",
                                         "payload": payload}})

    async with running(call) as task:
        await until(lambda: engine_has(first, "response.create"), "the greeting is asked")
        media(*map(_quiet_frame, (0xFF, 0xFE, 0x7E)))  # 45 ms: one append
        await until(lambda: engine_has(first, "input_audio_buffer.append", 1), "sent")
        first._gone = True  # closing: sends fail, the pump has not seen the close yet
        failed = [_quiet_frame(b) for b in (0xFD, 0x7F, 0xFE)]
        held = _quiet_frame(0x7E)
        media(*failed, held)
        await until(twilio.idle, "read")
        first.drop_abnormally()
        await until(lambda: "engine_lost" in call.stages(), "the drop is seen")
        reopened.set_result(None)
        await until(lambda: len(_audio(second)) == 4 * 120, "the audio reaches the new session")
        twilio.disconnect()
        await ended(task)
    assert _audio(second) == b"".join(base64.b64decode(p) for p in [*failed, held])


async def test_quiet_audio_held_at_a_drop_survives_a_second_drop_during_the_replay() -> None:
    """The new session drops while the replay is being sent: the replay's unsent rest is
    stale and dropped, and the quiet frames held at the first drop are not part of it."""
    first, cut, third = DroppingEngine(), SendCutEngine(sends_before_drop=1), FakeEngine()
    reopened, reopen = reopening(cut, third)

    twilio = FakeTwilio()
    call = Call(plan=make_plan(quiet_audio_batch_ms=100), engine=first, twilio=twilio,
                reopen_engine=reopen)
    async with running(call) as task:
        await until(lambda: engine_has(first, "response.create"), "the greeting is asked")
        twilio.media(2)  # 30 ms of quiet: held
        await until(twilio.idle, "read")
        await greeted_then_dropped(call, first)
        reopened.set_result(None)
        await until(lambda: call.stages().count("engine_resumed") == 2, "resumed twice")
        await until(lambda: len(_audio(third)) == 2 * 120, "the held audio reaches the third")
        twilio.disconnect()
        await ended(task)
    assert _audio(first) == b"" and _audio(cut) == b""
