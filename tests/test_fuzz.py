"""Property-based fuzzing of the wire codecs and the call core (Hypothesis).

Sequences of realistic wire messages from both sides of a call (a phone that echoes the
marks it was sent, an engine that creates, streams and finishes the responses it was asked
for, refuses some, calls tools and hears caller turns), then mutated: truncated, a field
dropped or of the wrong type, duplicated, sent for another stream, or replaced by junk.
Each goes through its codec and, if it parses, into `CallSession`, as the runner does.

Invariants:
- the codecs raise nothing but their protocol error (`TwilioProtocolError`,
  `EngineProtocolError`), and the core raises nothing at all;
- at most one response in flight: no `response.create` while one we asked for is neither
  created nor refused, or while one the engine created is not done (the Realtime API
  refuses a second one);
- no media is sent to Twilio after the call's end (`EndCall`), in the same batch or later.

The example budget is fixed and the run derandomized, so CI is reproducible and takes a
few seconds. A long local search: `HOTLINE_TEST_FUZZ_EXAMPLES=20000`, and with
`HOTLINE_TEST_FUZZ_RANDOM=1` (and `--hypothesis-seed=N`) a different one each run.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import json
import os
from collections import deque
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotline.business import GreetingTiming
from hotline.core.amd import AnsweredBy
from hotline.core.commands import (
    CancelTimer,
    Command,
    CreateResponse,
    EndCall,
    RunTool,
    SendToEngine,
    SendToTwilio,
    StartTimer,
    TwilioMarkOut,
    TwilioMediaOut,
)
from hotline.core.events import (
    UNHANDLED,
    AmdVerdict,
    CallEvent,
    EngineClosed,
    EngineError,
    EngineResponseCreated,
    EngineResponseDone,
    TimerFired,
    ToolFinished,
    TwilioClosed,
    TwilioStart,
)
from hotline.core.responses import PREREQUESTED_GREETING_EVENT_ID
from hotline.core.session import CallSession
from hotline.core.timers import TimerName
from hotline.core.tool_ledger import ToolEffect
from hotline.engine.realtime_codec import parse_engine
from hotline.errors import EngineProtocolError, TwilioProtocolError
from hotline.plan import CallPlan
from hotline.telephony.media_codec import parse_twilio
from tests.factories import make_plan

FUZZ_EXAMPLES = int(os.environ.get("HOTLINE_TEST_FUZZ_EXAMPLES", "300"))
settings.register_profile(
    "hotline-fuzz", max_examples=FUZZ_EXAMPLES, deadline=None,
    derandomize="HOTLINE_TEST_FUZZ_RANDOM" not in os.environ,
    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ = settings.get_profile("hotline-fuzz")

SID = "MZ" + "a" * 32
CALL_SID = "CA" + "1" * 32
START = TwilioStart(SID, CALL_SID, "AC" + "0" * 32, {"token": "t"})
LOUD = base64.b64encode(bytes([0x10]) * 160).decode()
QUIET = base64.b64encode(bytes([0xFF]) * 160).decode()
AGENT_AUDIO = base64.b64encode(bytes([0x7F]) * 800).decode()  # 100 ms

JUNK_VALUES: list[Any] = [None, True, -1, 10**30, 1.5, "", "!!", [], {}, ["x"], {"a": 1},
                          "A" * 3, "x" * 500]


# -- realistic wire messages ----------------------------------------------------------------
def twilio_media(payload: str, ts: int) -> dict[str, Any]:
    return {"event": "media", "sequenceNumber": "5", "streamSid": SID,
            "media": {"track": "inbound", "chunk": "2", "timestamp": str(ts),
                      "payload": payload}}


def twilio_msg(event: str, **body: Any) -> dict[str, Any]:
    return {"event": event, "sequenceNumber": "7", "streamSid": SID, **body}


def twilio_start() -> dict[str, Any]:
    return twilio_msg("start", start={
        "accountSid": START.account_sid, "streamSid": SID, "callSid": CALL_SID,
        "tracks": ["inbound"], "customParameters": {"token": "t"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}})


def engine_msg(type_: str, **body: Any) -> dict[str, Any]:
    return {"type": type_, "event_id": "event_1", **body}


def response_view(rid: str, status: str, reason: str | None = None) -> dict[str, Any]:
    details = None if reason is None else {"type": status, "reason": reason}
    return {"object": "realtime.response", "id": rid, "status": status,
            "status_details": details, "output": []}


# -- mutations --------------------------------------------------------------------------
def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into a JSON value (dict keys and list indexes)."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.append((*prefix, key))
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.append((*prefix, index))
            found += paths(child, (*prefix, index))
    return found


# Strategies are built once: Hypothesis validates each new one on its first draw.
MUTATION = st.sampled_from(
    ["intact"] * 6 + ["truncate", "drop", "retype", "duplicate", "junk", "not_object"])
JUNK_VALUE = st.sampled_from(JUNK_VALUES)
JUNK_WIRE = st.one_of(st.text(max_size=40), st.binary(max_size=40))
BOOL = st.booleans()
INDEX = st.integers(0, 1 << 16)  # into a list known only while drawing


def mutated(data: st.DataObject, message: dict[str, Any]) -> list[str | bytes]:
    """The message as sent: usually intact, sometimes broken in one way (or twice sent)."""
    kind = data.draw(MUTATION)
    text = orjson.dumps(message).decode()
    if kind == "truncate":
        return [text[:data.draw(st.integers(0, max(0, len(text) - 1)))]]
    if kind in ("drop", "retype"):
        options = paths(message)
        path = options[data.draw(INDEX) % len(options)]
        copy: Any = orjson.loads(text)
        parent = copy
        for key in path[:-1]:
            parent = parent[key]
        if kind == "drop":
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JUNK_VALUE)
        return [json.dumps(copy)]  # (orjson refuses ints over 64 bits: json sends them)
    if kind == "duplicate":
        return [text, text]
    if kind == "junk":
        return [data.draw(JUNK_WIRE)]
    if kind == "not_object":
        return [orjson.dumps([message]).decode()]
    return [text]


# -- the fuzzed call ----------------------------------------------------------------------
@dataclasses.dataclass
class World:
    """What the phone and the engine know, and the invariants' bookkeeping."""

    session: CallSession
    now: float = 0.0
    marks: deque[str] = dataclasses.field(default_factory=deque)
    timers: set[TimerName] = dataclasses.field(default_factory=set)
    tools: dict[str, str] = dataclasses.field(default_factory=dict)  # call_id -> name
    asked: str | None = None  # event_id of a response.create not created nor refused
    active: str | None = None  # a response the engine created and has not finished
    ended: bool = False
    seq: int = 0
    user_item: str = "item_u0"
    messages: int = 0
    malformed: int = 0

    def next_id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}_{self.seq}"

    def feed(self, event: CallEvent) -> None:
        if isinstance(event, EngineResponseCreated):
            self.asked, self.active = None, event.response_id
        elif isinstance(event, EngineResponseDone) and event.response_id == self.active:
            self.active = None
        elif isinstance(event, EngineError) and event.event_id == self.asked:
            self.asked = None
        self.check(self.session.handle(event, self.now))

    def check(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, SendToTwilio) and isinstance(command.message,
                                                                TwilioMediaOut):
                assert not self.ended, "media sent to Twilio after the call's end"
            elif isinstance(command, SendToTwilio) and isinstance(command.message,
                                                                  TwilioMarkOut):
                self.marks.append(command.message.name)
            elif isinstance(command, SendToEngine) and isinstance(command.message,
                                                                  CreateResponse):
                assert self.asked is None, "response.create while one is not yet created"
                assert self.active is None, "response.create while one is going"
                self.asked = command.message.event_id
            elif isinstance(command, StartTimer):
                self.timers.add(command.timer)
            elif isinstance(command, CancelTimer):
                self.timers.discard(command.timer)
            elif isinstance(command, RunTool):
                self.tools[command.call_id] = command.name
            elif isinstance(command, EndCall):
                self.ended = True

    def twilio(self, data: st.DataObject, message: dict[str, Any]) -> None:
        for wire in mutated(data, message):
            self.messages += 1
            try:
                event = parse_twilio(wire, SID)
            except TwilioProtocolError:
                self.malformed += 1
                continue
            if event is not UNHANDLED:
                self.feed(event)  # type: ignore[arg-type]

    def engine(self, data: st.DataObject, message: dict[str, Any]) -> None:
        for wire in mutated(data, message):
            self.messages += 1
            try:
                event = parse_engine(wire)
            except EngineProtocolError:
                self.malformed += 1
                continue
            if event is not UNHANDLED:
                self.feed(event)  # type: ignore[arg-type]


STRAY_RESPONSE = st.sampled_from(["resp_x", "resp_1"])
STRAY_MARK = st.sampled_from(["m1", "nope"])
FRAME = st.sampled_from([LOUD, QUIET])
DIGIT = st.sampled_from(list("0123456789*#"))
TWILIO_OTHER = st.sampled_from([{"event": "connected", "protocol": "Call", "version": "1.0.0"},
                                twilio_msg("something_new", x=1)])
DONE_STATUS = st.sampled_from([("completed", None), ("cancelled", "turn_detected"),
                               ("cancelled", "client_cancelled"),
                               ("incomplete", "max_output_tokens")])
TOOL_NAME = st.sampled_from(["end_call", "check_hours", "transfer_to_human", "take_message"])
ENGINE_OTHER = st.sampled_from([
    engine_msg("session.updated", session={"type": "realtime", "instructions": "full prompt"}),
    engine_msg("rate_limits.updated", rate_limits=[]),
    engine_msg("error", error={"type": "server_error", "message": "oops"}),
    None])  # a truncation of the response going
EFFECT = st.sampled_from(ToolEffect)
ANSWERED_BY = st.sampled_from(AnsweredBy)
CLOSED = st.sampled_from([TwilioClosed(), EngineClosed()])


def step(world: World, data: st.DataObject, action: str) -> None:
    w, draw = world, data.draw
    rid = w.active or draw(STRAY_RESPONSE)
    match action:
        case "media":
            w.twilio(data, twilio_media(draw(FRAME), int(w.now)))
        case "mark_echo":
            name = w.marks.popleft() if w.marks else draw(STRAY_MARK)
            w.twilio(data, twilio_msg("mark", mark={"name": name}))
        case "dtmf":
            digit = draw(DIGIT)
            w.twilio(data, twilio_msg("dtmf", dtmf={"track": "inbound_track", "digit": digit}))
        case "stop":
            w.twilio(data, twilio_msg("stop", stop={"accountSid": "AC", "callSid": CALL_SID}))
        case "start_again":
            w.twilio(data, twilio_start())
        case "twilio_other":
            w.twilio(data, draw(TWILIO_OTHER))
        case "created":
            w.engine(data, engine_msg("response.created", response=response_view(
                w.next_id("resp"), "in_progress")))
        case "delta":
            w.engine(data, engine_msg("response.output_audio.delta", response_id=rid,
                                      item_id=f"item_{rid}", output_index=0, content_index=0,
                                      delta=AGENT_AUDIO))
        case "agent_transcript":
            w.engine(data, engine_msg("response.output_audio_transcript.done",
                                      response_id=rid, item_id=f"item_{rid}", output_index=0,
                                      content_index=0, transcript="Hello there."))
        case "done":
            status, reason = draw(DONE_STATUS)
            w.engine(data, engine_msg("response.done", response=response_view(
                rid, status, reason)))
        case "refuse":
            w.engine(data, engine_msg("error", error={
                "type": "invalid_request_error", "code": "conversation_already_has_active_response",
                "message": "no", "param": None,
                "event_id": w.asked if draw(BOOL) else None}))
        case "speech_started":
            w.user_item = w.next_id("item_u")
            w.engine(data, engine_msg("input_audio_buffer.speech_started",
                                      audio_start_ms=int(w.now), item_id=w.user_item))
        case "speech_stopped":
            w.engine(data, engine_msg("input_audio_buffer.speech_stopped",
                                      audio_end_ms=int(w.now), item_id=w.user_item))
        case "committed":
            w.engine(data, engine_msg("input_audio_buffer.committed", previous_item_id=None,
                                      item_id=w.user_item))
        case "caller_transcript":
            w.engine(data, engine_msg("conversation.item.input_audio_transcription.completed",
                                      item_id=w.user_item, content_index=0,
                                      transcript="I'd like an appointment."))
        case "function_call":
            name = draw(TOOL_NAME)
            w.engine(data, engine_msg("response.function_call_arguments.done",
                                      response_id=rid, item_id=w.next_id("item_fc"),
                                      output_index=0, call_id=w.next_id("call"), name=name,
                                      arguments="{}"))
        case "engine_other":
            other = draw(ENGINE_OTHER)
            w.engine(data, other if other is not None else engine_msg(
                "conversation.item.truncated", item_id=f"item_{rid}", content_index=0,
                audio_end_ms=120))
        case "tool_finished" if w.tools:
            call_id = sorted(w.tools)[draw(INDEX) % len(w.tools)]
            w.feed(ToolFinished(call_id, w.tools.pop(call_id), '{"ok": true}',
                                draw(EFFECT), draw(BOOL)))
        case "timer" if w.timers:
            timer = sorted(w.timers, key=lambda t: t.value)[draw(INDEX) % len(w.timers)]
            w.timers.discard(timer)
            w.feed(TimerFired(timer))
        case "amd":
            w.feed(AmdVerdict(draw(ANSWERED_BY)))
        case "socket_closed":
            w.feed(draw(CLOSED))


# Weighted towards what a call is mostly made of (audio, marks, responses).
ACTIONS = (["media"] * 6 + ["mark_echo"] * 4 + ["created"] * 3 + ["delta"] * 5 + ["done"] * 3
           + ["speech_started", "speech_stopped", "committed", "caller_transcript"] * 2
           + ["agent_transcript", "refuse", "dtmf", "function_call", "tool_finished",
              "timer", "timer", "engine_other", "twilio_other", "start_again", "amd"]
           + ["stop", "socket_closed"])

PLANS: list[dict[str, Any]] = [
    {},
    {"bot_speaks_first": False},
    {"greeting_prerequested": True},
    {"transfer_number": "+15550009999",
     "dtmf_actions": (("0", "transfer_to_human"), ("#", "end_call")),
     "tools": ("end_call", "check_hours", "transfer_to_human", "take_message")},
    {"direction": "outbound", "amd": True, "voicemail": "Please call us back."},
    {"direction": "outbound", "amd": True, "greeting_timing": GreetingTiming.AFTER_AMD,
     "voicemail": "Please call us back."},
]


@functools.cache
def plan_of(index: int) -> CallPlan:
    return make_plan(**PLANS[index])


STEP = st.tuples(st.sampled_from([0, 0, 1, 20, 20, 100, 400, 2000]), st.sampled_from(ACTIONS))


@FUZZ
@given(st.data(), st.sampled_from(range(len(PLANS))), st.booleans(),
       st.lists(STEP, min_size=1, max_size=60))
def test_fuzzed_calls_keep_the_invariants(data: st.DataObject, plan_index: int,
                                          cached: bool, steps: list[tuple[int, str]]) -> None:
    plan = plan_of(plan_index)
    frames = (AGENT_AUDIO,) * 3 if cached else None
    world = World(CallSession(plan, frames, frames if plan.amd else None))
    if plan.greeting_prerequested and not cached:
        world.asked = PREREQUESTED_GREETING_EVENT_ID
    world.feed(START)  # the media stream hands the core its start first
    for dt, action in steps:
        world.now += dt
        step(world, data, action)
    assert world.malformed <= world.messages


# -- the codecs alone: any bytes, and any mutation of a valid message ----------------------
TWILIO_VALID = [twilio_media(LOUD, 20), twilio_msg("mark", mark={"name": "m1"}),
                twilio_msg("dtmf", dtmf={"track": "inbound_track", "digit": "5"}),
                twilio_msg("stop", stop={"accountSid": "AC", "callSid": CALL_SID}),
                twilio_start(), {"event": "connected", "protocol": "Call", "version": "1.0.0"}]
ENGINE_VALID = [
    engine_msg("response.created", response=response_view("r1", "in_progress")),
    engine_msg("response.done", response=response_view("r1", "cancelled", "turn_detected")),
    engine_msg("response.output_audio.delta", response_id="r1", item_id="i1", output_index=0,
               content_index=0, delta=AGENT_AUDIO),
    engine_msg("input_audio_buffer.speech_started", audio_start_ms=10, item_id="u1"),
    engine_msg("input_audio_buffer.speech_stopped", audio_end_ms=900, item_id="u1"),
    engine_msg("input_audio_buffer.committed", item_id="u1"),
    engine_msg("conversation.item.input_audio_transcription.completed", item_id="u1",
               content_index=0, transcript="hi"),
    engine_msg("response.output_audio_transcript.done", response_id="r1", item_id="i1",
               output_index=0, content_index=0, transcript="Hello"),
    engine_msg("conversation.item.truncated", item_id="i1", content_index=0, audio_end_ms=5),
    engine_msg("response.function_call_arguments.done", response_id="r1", item_id="f1",
               output_index=0, call_id="c1", name="end_call", arguments="{}"),
    engine_msg("session.updated", session={"type": "realtime", "instructions": "x"}),
    engine_msg("error", error={"type": "invalid_request_error", "code": "x", "message": "m",
                               "param": None, "event_id": "e1"}),
]


@settings(FUZZ, max_examples=FUZZ_EXAMPLES * 3)
@given(st.data(), st.sampled_from(TWILIO_VALID), st.sampled_from(ENGINE_VALID))
def test_mutated_messages_parse_or_raise_the_protocol_error(
        data: st.DataObject, twilio: dict[str, Any], engine: dict[str, Any]) -> None:
    for wire in mutated(data, twilio):
        with contextlib.suppress(TwilioProtocolError):
            parse_twilio(wire, SID)
    for wire in mutated(data, engine):
        with contextlib.suppress(EngineProtocolError):
            parse_engine(wire)


@settings(FUZZ, max_examples=FUZZ_EXAMPLES * 2)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                              lambda inner: st.lists(inner, max_size=4)
                              | st.dictionaries(st.sampled_from(
                                  ["event", "type", "media", "payload", "timestamp", "response",
                                   "id", "delta", "item_id", "streamSid", "start", "error"]),
                                  inner, max_size=5), max_leaves=12).map(json.dumps)))
def test_any_input_parses_or_raises_the_protocol_error(wire: str | bytes) -> None:
    with contextlib.suppress(TwilioProtocolError):
        parse_twilio(wire, SID)
    with contextlib.suppress(EngineProtocolError):
        parse_engine(wire)
