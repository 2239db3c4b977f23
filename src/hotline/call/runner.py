"""The thin runner of one call: owns the two sockets, the clock and the timers.

Two pumps (Twilio -> core, engine -> core) each do `parse -> session.handle -> execute`.
`handle()` never awaits, so the pumps cannot interleave inside a state change. No
database, no blocking call and no sleep happens here; records leave through the recorder.
Tools and Twilio REST requests (hang-up, transfer) run as side tasks whose results come
back to the core as events, so the media never waits for them.

The engine link: connecting (at the start, or again after a drop) is tried at once up to
three times within the connect budget; all failed is `EngineUnavailable`. An engine socket
that closes while the call goes on is `EngineLost`: engine-bound messages wait in the
backlog (caller audio bounded, what is dropped counted) while a new session opens with the
full prompt; `EngineResumed` replays the conversation into it ahead of what waited.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol, assert_never

from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed

from hotline.audio.mulaw import FRAME_BYTES, b64_decoded_len
from hotline.audio.recording_mix import CallTape
from hotline.core.closing import ControlAction
from hotline.core.commands import (
    AppendAudio,
    CancelTimer,
    Command,
    EndCall,
    HangUpCall,
    KeepMessageAudio,
    Record,
    RunTool,
    SendToEngine,
    SendToTwilio,
    StartTimer,
    TransferCall,
)
from hotline.core.events import (
    CallAborted,
    CallControlFailed,
    CallEvent,
    EngineClosed,
    EngineLost,
    EngineResumed,
    EngineUnavailable,
    TimerFired,
    ToolFinished,
    TwilioClosed,
    TwilioStart,
    Unhandled,
)
from hotline.core.greeting import CannedAudio
from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord, LeadMessage, TimelineStage, TranscriptTurn
from hotline.core.session import CallSession
from hotline.core.timers import TimerName
from hotline.engine.openai_realtime import EngineConnection
from hotline.engine.realtime_codec import parse_engine, render_engine
from hotline.engine.warm import EngineHandle
from hotline.errors import EngineProtocolError, TwilioApiError, TwilioProtocolError
from hotline.logs import CallLog
from hotline.plan import CallPlan
from hotline.telephony.call_control import CallControl
from hotline.telephony.media_codec import parse_twilio, render_twilio
from hotline.tools import Toolbox, tool_error

EngineOpener = Callable[[CallPlan], Awaitable[EngineHandle]]
# Connecting to the engine (at the start, or again after a drop): the first attempt and at
# most this many more, at once, all within the connect budget (a hanging one is cut there).
ENGINE_CONNECT_RETRIES = 2
DEFAULT_CONNECT_BUDGET_S = 0.9  # see Settings.engine_connect_budget_ms
# Caller audio kept while the engine (re)connects: about 30 s of Twilio's 20 ms frames,
# counted in frames, not appends (a batch of quiet frames is one append of several).
MAX_BACKLOG_AUDIO = 1500


class MalformedSide(enum.Enum):
    """Which socket sent a malformed message."""

    TWILIO = "Twilio"
    ENGINE = "engine"


class ASGIWebSocket(Protocol):
    """The raw ASGI side of Starlette's WebSocket: cheaper than its helpers per frame."""

    async def receive(self) -> Any: ...
    async def send(self, message: Any) -> None: ...


class CallClock:
    """Call-time ms since the webhook arrived: wall clock once (shared across instances),
    then monotonic (immune to clock steps during the call).

    `speed` (`HOTLINE_CLOCK_SPEED`, 1 in production) runs call time that many times faster
    than the wall clock, as the simulators' `SimClock` does in tests: `now_ms` is elapsed
    time × speed, and a timer of `delay_ms` call-time ms fires after `wall_s(delay_ms)`."""

    def __init__(self, zero_epoch_ms: float, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed must be > 0, not {speed}")
        self.speed = speed
        self._mono0 = time.monotonic()
        self._offset_ms = time.time() * 1000 - zero_epoch_ms

    def now_ms(self) -> float:
        return (self._offset_ms + (time.monotonic() - self._mono0) * 1000) * self.speed

    def ms_at(self, monotonic_s: float) -> float:
        """Call time at an earlier (or later) `time.monotonic()` reading."""
        return (self._offset_ms + (monotonic_s - self._mono0) * 1000) * self.speed

    def wall_s(self, delay_ms: float) -> float:
        """Wall-clock seconds that `delay_ms` of call time take."""
        return delay_ms / 1000 / self.speed


class CallRunner:
    def __init__(self, plan: CallPlan, twilio: ASGIWebSocket, open_engine: EngineOpener,
                 log: CallLog, clock: CallClock,
                 greeting_frames: tuple[str, ...] | None = None, *,
                 voicemail_frames: tuple[str, ...] | None = None,
                 toolbox: Toolbox | None = None, control: CallControl | None = None,
                 apology: CannedAudio | None = None, hold: CannedAudio | None = None,
                 reopen_engine: EngineOpener | None = None,
                 connect_budget_s: float = DEFAULT_CONNECT_BUDGET_S) -> None:
        self.plan = plan
        self.session = CallSession(plan, greeting_frames, voicemail_frames, apology, hold)
        self.timeline = [TimelineStage(stage, ms) for stage, ms in plan.early_stages]
        self.transcript: list[TranscriptTurn] = []
        self.messages: list[LeadMessage] = []
        # Recorded messages' audio (engine unavailable), written after the call, off the loop.
        self.message_audio: list[KeepMessageAudio] = []
        # Both sides' audio as it crossed the wire, for the recording (written after the
        # call): None when the business does not record.
        self.tape: CallTape | None = CallTape() if plan.recording else None
        self.ended_ms = 0.0  # call time when the pumps stopped: nothing is heard after
        self._toolbox = toolbox
        self._control = control
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._winding_down = False  # no new side task once the call is over
        self._twilio = twilio
        self._open_engine = open_engine
        # A new session with the full prompt after a drop mid-call (None: a drop ends it).
        self._reopen_engine = reopen_engine
        self._connect_budget_s = connect_budget_s
        self._engine: EngineConnection | None = None
        # Engine-bound text made while the engine is (re)connecting, sent in order once it
        # is; None once connected (or failed). The Twilio pump never waits for the engine.
        self._engine_backlog: list[str] | None = []
        self._backlog_audio = 0
        self._replay_unsent = 0  # the head of the backlog: a replay not sent yet
        self._log = log
        self._clock = clock
        self._ended = asyncio.Event()
        self._start_handled = asyncio.Event()
        self._timers: dict[TimerName, asyncio.TimerHandle] = {}
        self._twilio_open = True
        self._stream_sid = ""
        self.failure: str | None = None

    async def run(self, start: TwilioStart, started_at: datetime) -> CallRecord:
        self._stream_sid = start.stream_sid
        engine_pump = asyncio.create_task(self._connect_and_pump_engine(), name="engine-pump")
        twilio_pump = asyncio.create_task(self._pump_twilio(start), name="twilio-pump")
        ended = asyncio.create_task(self._ended.wait())
        try:
            await asyncio.wait({twilio_pump, engine_pump, ended},
                               return_when=asyncio.FIRST_COMPLETED)
            for task in (twilio_pump, engine_pump):
                if task.done() and not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    self._log.error("call failed in %s", task.get_name(), exc_info=exc)
                    self.failure = f"{task.get_name()}: {exc!r}"
                    self._record(TimelineStage("call_failed", self._clock.now_ms(),
                                               self.failure[:300]))
        finally:
            self._winding_down = True
            for handle in self._timers.values():
                handle.cancel()
            side = list(self._side_tasks)
            for pending in (twilio_pump, engine_pump, ended, *side):
                pending.cancel()
            await asyncio.gather(twilio_pump, engine_pump, ended, *side, return_exceptions=True)
            self.ended_ms = self._clock.now_ms()
            await self._close_sockets()
        return self.final_record(started_at)

    def final_record(self, started_at: datetime) -> CallRecord:
        """The call's record, once its pumps are done (also for a call cut by a forced
        shutdown: the media handler builds it when `run` is cancelled)."""
        if self.session.outcome is None:
            # The core did not end the call itself: tell it how it ended.
            last: CallEvent = CallAborted(self.failure) if self.failure else TwilioClosed()
            for command in self.session.handle(last, self._clock.now_ms()):
                if isinstance(command, Record):
                    self._record(command.item)
        outcome = self.session.outcome or Outcome.COMPLETED
        return CallRecord(
            call_sid=self.plan.call_sid,
            business_slug=self.plan.business_slug,
            direction=self.plan.direction,
            from_number=self.plan.from_number,
            to_number=self.plan.to_number,
            status="completed",
            outcome=outcome,
            started_at=started_at,
            ended_at=datetime.now(UTC),
            template_name=self.plan.template_name,
            variables=dict(self.plan.variables),
            transcript=self.transcript,
            timeline=self.timeline,
            messages=self.messages,
            stats=self.session.stats.as_dict(),
        )

    def deliver(self, event: CallEvent) -> None:
        """An event from outside the call's sockets (an answering-machine verdict posted to
        the webhook), handled on the loop like any other."""
        self._spawn(self._dispatch(event), "deliver")

    # -- pumps ------------------------------------------------------------------------------
    async def _pump_twilio(self, start: TwilioStart) -> None:
        await self._dispatch(start)  # the start goes through the core before any media
        self._start_handled.set()
        receive = self._twilio.receive
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self._twilio_open = False
                await self._dispatch(TwilioClosed())
                return
            text = message.get("text")
            if text is None:
                self._malformed(MalformedSide.TWILIO, "a binary frame (the protocol is JSON text)")
                continue
            try:
                event = parse_twilio(text, self._stream_sid)
            except TwilioProtocolError as exc:
                self._malformed(MalformedSide.TWILIO, str(exc))
                continue
            if not isinstance(event, Unhandled):
                await self._dispatch(event)

    async def _connect_and_pump_engine(self) -> None:
        handle = await self._connect(self._open_engine)
        if handle is None:
            return
        for stage in handle.stages:
            self._record(stage)
            self.session.stage_recorded_elsewhere(stage.stage)
        self._record(TimelineStage("engine_ready", self._clock.now_ms(), handle.path))
        connection = handle.connection
        while True:
            self._engine = connection
            detail = await self._pump_engine(connection)
            self._log.info("engine socket closed (%s)", detail)
            if self._reopen_engine is None or self.session.outcome is not None:
                await self._dispatch(EngineClosed())
                return
            # Dropped mid-call: what goes to the engine waits for the next session.
            if self._engine_backlog is None:
                self._engine_backlog = []
            await self._start_handled.wait()
            await self._dispatch(EngineLost(detail))
            if self.session.outcome is not None:
                return
            if self.session.closing:
                # Dropped while closing: the hang-up or transfer needs no engine, and a new
                # session would have nothing to say. The call ends when the closing is done.
                await self._close_engine()
                await self._ended.wait()
                return
            await self._close_engine()
            resumed = await self._connect(self._reopen_engine)
            if resumed is None:
                return
            connection = self._engine = resumed.connection
            # The conversation's replay goes first, then what waited (the caller's audio).
            commands = self.session.handle(EngineResumed(), self._clock.now_ms())
            replay = [render_engine(c.message) for c in commands
                      if isinstance(c, SendToEngine)]
            # A drop while an earlier replay was still being sent: its unsent rest is stale
            # (the new replay holds the whole conversation).
            del self._engine_backlog[:self._replay_unsent]
            self._engine_backlog[:0] = replay
            self._replay_unsent = len(replay)
            await self._execute([c for c in commands if not isinstance(c, SendToEngine)])

    async def _connect(self, opener: EngineOpener) -> EngineHandle | None:
        """An engine session: the first attempt and its retries, at once, all within the
        budget. None once they all failed (the core was told: `EngineUnavailable`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_budget_s
        detail = ""
        for attempt in range(1, ENGINE_CONNECT_RETRIES + 2):
            try:
                async with asyncio.timeout_at(deadline):
                    handle = await opener(self.plan)
            except Exception as exc:  # any failure to reach it ends this call at most
                self.session.stats.engine_connect_failures += 1
                detail = (f"no session within {self._connect_budget_s * 1000:.0f} ms"
                          if isinstance(exc, TimeoutError)
                          else f"{type(exc).__name__}: {exc}")  # (a repr can hold headers)
                self._log.warning("engine connect attempt %d failed: %s", attempt, detail)
                self._record(TimelineStage("engine_connect_failed", self._clock.now_ms(),
                                           f"attempt {attempt}: {detail}"[:300]))
                if loop.time() >= deadline:
                    break
                continue
            self.session.stats.engine_connects += 1
            return handle
        self._log.error("engine connection failed: %s", detail)
        self.failure = f"engine connection failed: {detail}"
        self._record(TimelineStage("engine_failed", self._clock.now_ms(), detail[:300]))
        self._engine_backlog = None
        self._engine = None
        await self._start_handled.wait()  # the call's start comes first in its story
        await self._dispatch(EngineUnavailable(detail[:200]))
        # The call goes on without an engine (the apology, the caller's message) until the
        # core ends it: this pump ending must not end the call.
        await self._ended.wait()
        return None

    async def _pump_engine(self, connection: EngineConnection) -> str:
        """Send what waited for this session, then its events into the core until its
        socket closes; how it closed."""
        try:
            while self._engine_backlog:
                # Taken off only once sent: a send cut by a drop is sent to the next session.
                await connection.send_raw(self._engine_backlog[0])
                self._engine_backlog.pop(0)
                self._replay_unsent = max(0, self._replay_unsent - 1)
        except ConnectionClosed as exc:
            return _close_detail(exc)
        self._engine_backlog = None
        self._backlog_audio = 0
        # The engine's events (a prerequested greeting's audio may be waiting already) are
        # for a call that has started.
        await self._start_handled.wait()
        recv = connection.recv_bytes
        while True:
            try:
                data = await recv()
            except ConnectionClosed as exc:
                return _close_detail(exc)
            try:
                event = parse_engine(data)
            except EngineProtocolError as exc:
                self._malformed(MalformedSide.ENGINE, str(exc))
                continue
            if not isinstance(event, Unhandled):
                await self._dispatch(event)

    def _malformed(self, side: MalformedSide, detail: str) -> None:
        """An off-protocol message, skipped: counted always, logged once per call and side
        (a flood of them costs a counter each, not a log line each)."""
        stats = self.session.stats
        if side is MalformedSide.TWILIO:
            stats.malformed_twilio += 1
            count = stats.malformed_twilio
        else:
            stats.malformed_engine += 1
            count = stats.malformed_engine
        if count == 1:
            self._log.warning("malformed %s message skipped (later ones are only counted): %s",
                              side.value, detail[:200])

    # -- the core and its commands ----------------------------------------------------------
    async def _dispatch(self, event: CallEvent) -> None:
        now_ms = self._clock.now_ms()
        if self.tape is not None:
            self.tape.heard(event, now_ms)  # an append for the caller's frames, nothing more
        await self._execute(self.session.handle(event, now_ms))

    async def _execute(self, commands: list[Command]) -> None:
        for command in commands:
            match command:
                case SendToTwilio():
                    if self.tape is not None:
                        self.tape.sent(command.message, self._clock.now_ms())
                    await self._send_twilio(render_twilio(self._stream_sid, command.message))
                case SendToEngine():
                    message = command.message
                    await self._send_engine(render_engine(message),
                                            message.audio_b64
                                            if isinstance(message, AppendAudio) else None)
                case Record():
                    self._record(command.item)
                case StartTimer():
                    self._start_timer(command.timer, command.delay_ms)
                case CancelTimer():
                    handle = self._timers.pop(command.timer, None)
                    if handle is not None:
                        handle.cancel()
                case EndCall():
                    self._log.info("call ending: %s", command.outcome)
                    self._ended.set()
                case RunTool():
                    self._spawn(self._run_tool(command), f"tool-{command.name}")
                case HangUpCall() | TransferCall():
                    self._spawn(self._control_call(command), "call-control")
                case KeepMessageAudio():
                    self.message_audio.append(command)
                case _:
                    assert_never(command)

    async def _send_twilio(self, text: str) -> None:
        if not self._twilio_open:
            return
        try:
            await self._twilio.send({"type": "websocket.send", "text": text})
        except (OSError, RuntimeError, ConnectionClosed, WebSocketDisconnect) as exc:
            # Starlette/uvicorn raise these when the peer has gone: the call is over.
            self._twilio_open = False
            self._log.info("Twilio socket gone while sending: %r", exc)
            await self._dispatch(TwilioClosed())

    async def _send_engine(self, text: str, audio_b64: str | None = None) -> None:
        """`audio_b64`: the caller audio an append carries (None: not an append); what
        waits for the engine is bounded in its 20 ms frames, counted only when it waits."""
        if self._engine_backlog is not None:
            if audio_b64 is not None:
                audio_frames = _audio_frames(audio_b64)
                if self._backlog_audio + audio_frames > MAX_BACKLOG_AUDIO:
                    self.session.stats.engine_audio_dropped += audio_frames
                    return
                self._backlog_audio += audio_frames
            self._engine_backlog.append(text)
            return
        if self._engine is None:
            return  # it never connected; the call is ending
        try:
            await self._engine.send_raw(text)
        except ConnectionClosed:
            if self._reopen_engine is None:
                await self._dispatch(EngineClosed())
                return
            # The engine pump sees the close too and reconnects: this waits for that.
            if self._engine_backlog is None:
                self._engine_backlog = []
            self._engine_backlog.append(text)
            if audio_b64 is not None:
                self._backlog_audio += _audio_frames(audio_b64)

    def _start_timer(self, timer: TimerName, delay_ms: int) -> None:
        old = self._timers.pop(timer, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(timer, None)
            self._spawn(self._dispatch(TimerFired(timer)), f"timer-{timer.value}")

        self._timers[timer] = loop.call_later(self._clock.wall_s(delay_ms), fire)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        if self._winding_down:
            work.close()  # the call is over: nothing may act on it any more
            return
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_task_done)

    def _side_task_done(self, task: asyncio.Task[None]) -> None:
        self._side_tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        # A bug in the core or a tool's plumbing: end the call like a failed pump would,
        # rather than leave it open and silent.
        exc = task.exception()
        self._log.error("%s failed", task.get_name(), exc_info=exc)
        self.failure = f"{task.get_name()}: {exc!r}"
        self._record(TimelineStage("call_failed", self._clock.now_ms(), self.failure[:300]))
        self._ended.set()

    async def _run_tool(self, command: RunTool) -> None:
        """The tool runs here, off the pumps; its answer goes back through the core."""
        if self._toolbox is None:
            outcome = tool_error(command.name, "tools are not available on this call")
        else:
            outcome = await self._toolbox.run(command.name, command.arguments,
                                              taken_ms=int(self._clock.now_ms()))
        await self._dispatch(ToolFinished(command.call_id, command.name, outcome.output_json(),
                                          outcome.effect, outcome.error, outcome.message))

    async def _control_call(self, command: HangUpCall | TransferCall) -> None:
        action = (ControlAction.TRANSFER if isinstance(command, TransferCall)
                  else ControlAction.HANG_UP)
        try:
            if self._control is None:
                raise TwilioApiError("no Twilio REST client")
            if isinstance(command, TransferCall):
                await self._control.transfer(self.plan.call_sid, command.number)
            else:
                await self._control.hang_up(self.plan.call_sid)
        except Exception as exc:  # any failure: the core closes the stream itself
            detail = str(exc) if isinstance(exc, TwilioApiError) else type(exc).__name__
            self._log.error("%s failed: %s", action, detail)
            await self._dispatch(CallControlFailed(action, detail))

    def _record(self, item: TimelineStage | TranscriptTurn | LeadMessage) -> None:
        if isinstance(item, TimelineStage):
            self.timeline.append(item)
            self._log.info("stage %-24s %8.1f ms %s", item.stage, item.ms, item.detail)
        elif isinstance(item, LeadMessage):
            self.messages.append(item)
            self._log.info("message taken for the business, %d chars", len(item.message))
        else:
            self.transcript.append(item)
            # What people say (and the digits they press) stays out of INFO logs.
            self._log.info("%s turn, %d chars", item.speaker, len(item.text))
            if self._log.isEnabledFor(logging.DEBUG):
                self._log.debug("%s: %s", item.speaker, item.text)

    async def _close_engine(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            try:
                await engine.close()
            except (OSError, ConnectionClosed) as exc:
                self._log.debug("engine close: %r", exc)

    async def _close_sockets(self) -> None:
        await self._close_engine()
        if self._twilio_open:
            self._twilio_open = False
            try:
                await self._twilio.send({"type": "websocket.close", "code": 1000, "reason": ""})
            except (OSError, RuntimeError, WebSocketDisconnect) as exc:
                self._log.debug("Twilio close: %r", exc)


def _audio_frames(payload_b64: str) -> int:
    """The 20 ms frames an append's audio makes (at least 1: a Twilio frame is one)."""
    return max(1, -(-b64_decoded_len(payload_b64) // FRAME_BYTES))


def _close_detail(exc: ConnectionClosed) -> str:
    """How an engine socket closed, for the timeline: its close code and reason."""
    frame = exc.rcvd
    if frame is None:
        return "closed without a close frame"
    return f"close code {frame.code}" + (f": {frame.reason}" if frame.reason else "")
