"""One simulated Realtime GA session: the protocol state of one connection and its record.

`SimulatedSession.run()` reads client frames in order and answers each through a handler;
every server event goes through `_emit`, which records it and puts it in one outbox drained
by a writer task, so the wire order is exactly the order of `_emit` calls and a cancel can
never interleave with a half-sent response. The only timers are the session.update delay
(awaited in the reader, so later events wait for it, as on the real API) and the response
producer task (time to first audio, then delta pacing).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import itertools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from hotline.audio import mulaw
from hotline.sim import speech
from hotline.sim.clock import REAL_TIME, SimClock
from hotline.sim.engine_config import (
    SEMANTIC_SILENCE_MS,
    SIMULATED_FORMAT,
    InvalidRequest,
    JsonDict,
    apply_session_update,
    check_item,
    check_response_params,
    default_session,
)
from hotline.sim.engine_replies import ReplyScript, language_of
from hotline.sim.engine_vad import EnergyVad, VadSpeechStarted, VadSpeechStopped

log = logging.getLogger(__name__)

MIN_COMMIT_MS = 100  # the real API refuses to commit less audio than this
INVALID = "<invalid>"  # Received.type of a client frame that was not a JSON object with a type
_TEXT_DELTA_WORDS = 4  # words per response.output_text.delta in text-only responses


@dataclass
class LatencyProfile:
    """How slow the simulated engine is. Mutable: tests may change it between calls."""

    connect_ms: float
    session_update_ms: float
    first_audio_base_ms: float
    first_audio_per_1000_chars_ms: float
    realtime_factor: float = 1.0  # delta pacing: 1.0 = real time, 0 = as fast as possible
    delta_ms: int = 100  # audio per response.output_audio.delta

    @classmethod
    def zero(cls) -> LatencyProfile:
        return cls(connect_ms=0, session_update_ms=0, first_audio_base_ms=0,
                   first_audio_per_1000_chars_ms=0, realtime_factor=1.0)

    @classmethod
    def modeled(cls) -> LatencyProfile:
        return cls(connect_ms=300, session_update_ms=100, first_audio_base_ms=350,
                   first_audio_per_1000_chars_ms=150, realtime_factor=1.0)

    def first_audio_ms(self, instruction_chars: int) -> float:
        return self.first_audio_base_ms + self.first_audio_per_1000_chars_ms * (
            instruction_chars / 1000)


@dataclass(frozen=True)
class ScriptedToolCall:
    """A function call the simulated model makes in the first response that follows the
    `after_caller_turn`-th committed caller turn (after speaking, unless `speak_first=False`)."""

    after_caller_turn: int
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    speak_first: bool = True


@dataclass(slots=True)
class Received:
    """One frame on the wire, client's or server's, with its time on the engine's clock."""

    at: float
    type: str
    event: JsonDict


@dataclass(slots=True)
class Truncation:
    item_id: str
    audio_end_ms: int
    produced_ms: int  # audio produced for the item when the truncate arrived


@dataclass(slots=True)
class _ResponseRun:
    """A response in progress (at most one per session)."""

    id: str
    conversation: str  # "auto" or "none"
    modalities: list[str]
    voice: str
    text: str
    instructions_chars: int
    metadata: JsonDict | None
    max_output_tokens: object
    tool_call: ScriptedToolCall | None
    output: list[JsonDict] = field(default_factory=list)
    item: JsonDict | None = None  # the open message item, between output_item.added and .done
    chunks_total: int = 1
    chunks_sent: int = 0
    audio_ms_sent: int = 0
    task: asyncio.Task[None] | None = None

    @property
    def audio_out(self) -> bool:
        return self.modalities == ["audio"]

    def text_said(self) -> str:
        """The transcript covered by the chunks sent so far (proportional split)."""
        return self.text[:_split_point(len(self.text), self.chunks_sent, self.chunks_total)]


def _split_point(length: int, chunk: int, chunks: int) -> int:
    return length * chunk // chunks if chunks else length


class SimulatedSession:
    """One accepted connection: the protocol state and everything recorded about it."""

    def __init__(self, connection: ServerConnection, model: str, *,
                 profile: Callable[[], LatencyProfile], replies: list[str] | None = None,
                 caller_transcripts: list[str] | None = None,
                 tool_script: list[ScriptedToolCall] | None = None,
                 clock: SimClock = REAL_TIME) -> None:
        self.model = model
        self._clock = clock
        self.received: list[Received] = []
        self.sent: list[Received] = []
        self.instructions_history: list[tuple[float, str]] = []
        self.conversation: list[JsonDict] = []
        self.truncations: list[Truncation] = []
        self.errors_sent: list[JsonDict] = []
        self.closed = asyncio.Event()
        self._profile = profile  # read at each use: the simulator's profile may change
        self._connection = connection
        self._tag = secrets.token_hex(4)  # fixed length, so tag + counter ids never collide
        self._ids = itertools.count(1)
        self.id = f"sess_{self._tag}"
        self.config: JsonDict = default_session(self.id, model)
        self._conversation_id = f"conv_{self._tag}"
        self._script = ReplyScript(replies, caller_transcripts)
        self._tool_script = list(tool_script or ())
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._audio_total_bytes = 0  # everything appended this session (the VAD clock)
        self._buffer_bytes = 0  # appended since the last commit / clear
        self._vad: EnergyVad | None = None
        self._speech_item_id: str | None = None  # user item announced by speech_started
        self._speech_start_ms = 0
        self._response: _ResponseRun | None = None
        self._produced_ms_by_item: dict[str, int] = {}
        self._text_by_item: dict[str, str] = {}
        self._caller_turns = 0
        self._assistant_responses = 0
        self._voice_locked = False
        self._rate_requests_remaining = 5000
        self._configure_vad()
        self._handlers: dict[str, Callable[[JsonDict, float], Awaitable[None] | None]] = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.truncate": self._on_item_truncate,
            "conversation.item.delete": self._on_item_delete,
            "conversation.item.retrieve": self._on_item_retrieve,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
            "output_audio_buffer.clear": self._on_output_audio_buffer_clear,
        }

    # ---------------------------------------------------------------- public surface

    def received_types(self) -> list[str]:
        return [r.type for r in self.received]

    def sent_types(self) -> list[str]:
        return [s.type for s in self.sent]

    async def close(self, code: int = 1011) -> None:
        """Drop the connection from the server side (an engine failure, as seen by clients)."""
        await self._connection.close(code, "simulated engine connection drop")

    def inject(self, text: str) -> None:
        """Send `text` as is, in order with the events (a fault: a faulty or hostile engine's
        malformed or oversized message). It is not recorded in `sent`."""
        self._outbox.put_nowait(text)

    @property
    def close_code(self) -> int | None:
        """The code of the connection's close (None while it is open)."""
        return self._connection.close_code

    @property
    def response_active(self) -> bool:
        return self._response is not None

    # ---------------------------------------------------------------- I/O

    async def run(self) -> None:
        writer = asyncio.create_task(self._write_loop())
        try:
            self._emit({"type": "session.created", "session": copy.deepcopy(self.config)})
            async for message in self._connection:
                await self._handle_frame(message, self._clock.now())
        except ConnectionClosed:
            pass
        finally:
            tasks: list[asyncio.Task[None]] = [writer]
            if self._response is not None and self._response.task is not None:
                tasks.append(self._response.task)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.closed.set()
            log.info("engine sim session %s closed (%s)", self.id,
                     self._connection.close_code)

    async def _write_loop(self) -> None:
        while True:
            text = await self._outbox.get()
            try:
                await self._connection.send(text)
            except ConnectionClosed:
                return

    def _emit(self, event: JsonDict) -> None:
        event["event_id"] = f"event_{self._tag}_{next(self._ids)}"
        self.sent.append(Received(self._clock.now(), event["type"], event))
        if event["type"] == "error":
            self.errors_sent.append(event)
        self._outbox.put_nowait(orjson.dumps(event).decode())

    def _error(self, problem: InvalidRequest, client_event_id: object = None) -> None:
        self._emit({"type": "error", "error": {
            "type": problem.error_type, "code": problem.code, "message": problem.message,
            "param": problem.param,
            "event_id": client_event_id if isinstance(client_event_id, str) else None,
        }})

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{self._tag}{next(self._ids)}"

    async def _handle_frame(self, message: str | bytes, at: float) -> None:
        try:
            event = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            raw = message if isinstance(message, str) else message.decode("utf-8", "replace")
            self.received.append(Received(at, INVALID, {"raw": raw[:2000]}))
            self._error(InvalidRequest(f"The message could not be parsed as JSON: {exc}",
                                       code="invalid_json"))
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self.received.append(Received(at, INVALID, event if isinstance(event, dict)
                                          else {"raw": event}))
            client_event_id = event.get("event_id") if isinstance(event, dict) else None
            if isinstance(event, dict) and "type" not in event:
                problem = InvalidRequest("Missing required parameter: 'type'.",
                                         code="missing_required_parameter", param="type")
            else:
                problem = InvalidRequest("Expected a JSON object with a string 'type'.",
                                         code="invalid_type", param="type")
            self._error(problem, client_event_id)
            return
        self.received.append(Received(at, event["type"], event))
        handler = self._handlers.get(event["type"])
        try:
            if handler is None:
                raise InvalidRequest(
                    f"Invalid value: {event['type']!r}. Supported values are: "
                    + ", ".join(repr(name) for name in self._handlers) + ".", param="type")
            outcome = handler(event, at)
            if outcome is not None:
                await outcome
        except InvalidRequest as problem:
            self._error(problem, event.get("event_id"))
        except Exception:  # the session's top level: a simulator bug must not drop the socket
            log.exception("engine sim session %s failed on %s", self.id, event["type"])
            self._error(InvalidRequest("The simulator failed while handling this event.",
                                       code="simulator_bug", error_type="server_error"),
                        event.get("event_id"))

    # ---------------------------------------------------------------- session

    async def _on_session_update(self, event: JsonDict, at: float) -> None:
        update = _required(event, "session")
        old_turn_detection = self.config["audio"]["input"]["turn_detection"]
        apply_session_update(self.config, update, voice_locked=self._voice_locked)
        if isinstance(update, dict) and "instructions" in update:
            self.instructions_history.append((at, self.config["instructions"]))
        if self.config["audio"]["input"]["turn_detection"] != old_turn_detection:
            self._configure_vad()
        delay_ms = self._profile().session_update_ms
        if delay_ms > 0:
            await self._clock.sleep(delay_ms / 1000)
        self._emit({"type": "session.updated", "session": copy.deepcopy(self.config)})

    def _turn_detection(self) -> JsonDict | None:
        value: JsonDict | None = self.config["audio"]["input"]["turn_detection"]
        return value

    def _configure_vad(self) -> None:
        detection = self._turn_detection()
        if detection is None:
            self._vad = None
            return
        if detection["type"] == "semantic_vad":
            vad = EnergyVad(0.5, 300, SEMANTIC_SILENCE_MS[detection["eagerness"]])
        else:
            vad = EnergyVad(detection["threshold"], detection["prefix_padding_ms"],
                            detection["silence_duration_ms"])
        vad.start_at(self._audio_total_bytes)
        self._vad = vad
        self._speech_item_id = None

    # ---------------------------------------------------------------- input audio

    def _on_append(self, event: JsonDict, at: float) -> None:
        payload_b64 = _required(event, "audio")
        if not isinstance(payload_b64, str):
            raise InvalidRequest("Invalid type for 'audio': expected a base64 string.",
                                 code="invalid_type", param="audio")
        try:
            audio = base64.b64decode(payload_b64, validate=True)
        except binascii.Error as exc:
            raise InvalidRequest(f"Invalid 'audio': not valid base64 ({exc}).",
                                 param="audio") from exc
        if self.config["audio"]["input"]["format"]["type"] != SIMULATED_FORMAT:
            raise InvalidRequest(
                "Input audio format is unsupported in simulator: set "
                f"session.audio.input.format to {{'type': '{SIMULATED_FORMAT}'}} first.",
                code="unsupported_in_simulator", param="audio")
        self._audio_total_bytes += len(audio)
        self._buffer_bytes += len(audio)
        if self._vad is None:
            return
        for vad_event in self._vad.feed(audio):
            if isinstance(vad_event, VadSpeechStarted):
                self._on_speech_started(vad_event)
            else:
                self._on_speech_stopped(vad_event)

    def _on_speech_started(self, vad_event: VadSpeechStarted) -> None:
        item_id = self._new_id("item")
        self._speech_item_id = item_id
        self._speech_start_ms = vad_event.speech_start_ms
        self._emit({"type": "input_audio_buffer.speech_started",
                    "audio_start_ms": vad_event.audio_start_ms, "item_id": item_id})
        detection = self._turn_detection()
        run = self._response
        if (detection is not None and detection["interrupt_response"] and run is not None
                and run.conversation == "auto"):
            self._cancel_response(run, "turn_detected")

    def _on_speech_stopped(self, vad_event: VadSpeechStopped) -> None:
        item_id = self._speech_item_id or self._new_id("item")
        self._speech_item_id = None
        self._emit({"type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": vad_event.audio_end_ms, "item_id": item_id})
        self._commit_user_audio(item_id, vad_event.speech_end_ms - self._speech_start_ms)
        detection = self._turn_detection()
        # Like the real API with interrupt_response off, a turn ending during a response
        # does not start another one.
        if detection is not None and detection["create_response"] and self._response is None:
            self._start_response({})

    def _on_commit(self, event: JsonDict, at: float) -> None:
        buffered_ms = self._buffer_bytes / mulaw.BYTES_PER_MS
        if buffered_ms < MIN_COMMIT_MS:
            raise InvalidRequest(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {buffered_ms:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty")
        item_id = self._speech_item_id or self._new_id("item")
        self._speech_item_id = None
        if self._vad is not None:
            self._vad.reset_turn()
        self._commit_user_audio(item_id, int(buffered_ms))

    def _on_clear(self, event: JsonDict, at: float) -> None:
        self._buffer_bytes = 0
        self._speech_item_id = None
        if self._vad is not None:
            self._vad.reset_turn()
        self._emit({"type": "input_audio_buffer.cleared"})

    def _commit_user_audio(self, item_id: str, speech_ms: int) -> None:
        self._buffer_bytes = 0
        previous_item_id = self.conversation[-1]["id"] if self.conversation else None
        self._emit({"type": "input_audio_buffer.committed", "item_id": item_id,
                    "previous_item_id": previous_item_id})
        item: JsonDict = {"id": item_id, "object": "realtime.item", "type": "message",
                          "status": "completed", "role": "user",
                          "content": [{"type": "input_audio", "transcript": None}]}
        self.conversation.append(item)
        self._caller_turns += 1
        self._emit({"type": "conversation.item.added", "previous_item_id": previous_item_id,
                    "item": copy.deepcopy(item)})
        self._emit({"type": "conversation.item.done", "previous_item_id": previous_item_id,
                    "item": copy.deepcopy(item)})
        if self.config["audio"]["input"]["transcription"] is None:
            return
        transcript = self._script.next_transcript(max(0, speech_ms))
        item["content"][0]["transcript"] = transcript
        self._emit({"type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id, "content_index": 0, "delta": transcript})
        self._emit({"type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id, "content_index": 0, "transcript": transcript,
                    "usage": {"type": "duration", "seconds": round(speech_ms / 1000, 3)}})

    # ---------------------------------------------------------------- conversation items

    def _find(self, item_id: str) -> int | None:
        for index, item in enumerate(self.conversation):
            if item.get("id") == item_id:
                return index
        return None

    def _on_item_create(self, event: JsonDict, at: float) -> None:
        item = check_item(_required(event, "item"))
        previous_item_id = event.get("previous_item_id")
        if previous_item_id is None:
            position = len(self.conversation)
        elif previous_item_id == "root":
            position = 0
        else:
            found = self._find(str(previous_item_id))
            if found is None:
                raise InvalidRequest(
                    f"Invalid value for 'previous_item_id': item {previous_item_id!r} "
                    "does not exist in the conversation.", param="previous_item_id")
            position = found + 1
        if "id" in item:
            if self._find(item["id"]) is not None:
                raise InvalidRequest(f"Item with id {item['id']!r} already exists.",
                                     param="item.id")
        else:
            item["id"] = self._new_id("item")
        item.setdefault("object", "realtime.item")
        item["status"] = "completed"
        self.conversation.insert(position, item)
        previous = self.conversation[position - 1]["id"] if position > 0 else None
        self._emit({"type": "conversation.item.added", "previous_item_id": previous,
                    "item": copy.deepcopy(item)})
        self._emit({"type": "conversation.item.done", "previous_item_id": previous,
                    "item": copy.deepcopy(item)})

    def _on_item_truncate(self, event: JsonDict, at: float) -> None:
        item_id = _required(event, "item_id")
        _required(event, "content_index")
        audio_end_ms = _required(event, "audio_end_ms")
        if not isinstance(audio_end_ms, int) or isinstance(audio_end_ms, bool) or audio_end_ms < 0:
            raise InvalidRequest("Invalid value for 'audio_end_ms': expected an integer >= 0.",
                                 param="audio_end_ms")
        if event["content_index"] != 0:
            raise InvalidRequest("Invalid value for 'content_index': only 0 is supported.",
                                 param="content_index")
        index = self._find(str(item_id))
        if index is None:
            raise InvalidRequest(
                f"Invalid value for 'item_id': item {item_id!r} does not exist in the "
                "conversation.", param="item_id")
        produced_ms = self._produced_ms_by_item.get(str(item_id))
        if produced_ms is None or produced_ms == 0:
            raise InvalidRequest("Only model output audio messages can be truncated",
                                 param="item_id")
        if audio_end_ms > produced_ms:
            raise InvalidRequest(
                f"Audio content of {produced_ms}ms is already shorter than {audio_end_ms}ms",
                param="audio_end_ms")
        self.truncations.append(Truncation(str(item_id), audio_end_ms, produced_ms))
        content = self.conversation[index]["content"]
        if content:  # an item still being generated gets its cut when it closes
            text = self._text_by_item.get(str(item_id), "")
            content[0]["transcript"] = text[:len(text) * audio_end_ms // produced_ms]
        self._emit({"type": "conversation.item.truncated", "item_id": item_id,
                    "content_index": 0, "audio_end_ms": audio_end_ms})

    def _on_item_delete(self, event: JsonDict, at: float) -> None:
        item_id = _required(event, "item_id")
        index = self._find(str(item_id))
        if index is None:
            raise InvalidRequest(
                f"Invalid value for 'item_id': item {item_id!r} does not exist in the "
                "conversation.", param="item_id")
        del self.conversation[index]
        self._emit({"type": "conversation.item.deleted", "item_id": item_id})

    def _on_item_retrieve(self, event: JsonDict, at: float) -> None:
        item_id = _required(event, "item_id")
        index = self._find(str(item_id))
        if index is None:
            raise InvalidRequest(
                f"Invalid value for 'item_id': item {item_id!r} does not exist in the "
                "conversation.", param="item_id")
        self._emit({"type": "conversation.item.retrieved",
                    "item": copy.deepcopy(self.conversation[index])})

    def _on_output_audio_buffer_clear(self, event: JsonDict, at: float) -> None:
        raise InvalidRequest("output_audio_buffer.clear is only supported for WebRTC and SIP "
                             "sessions, not WebSocket.", param="type")

    # ---------------------------------------------------------------- responses

    def _on_response_create(self, event: JsonDict, at: float) -> None:
        params = check_response_params(event.get("response"))
        if self._response is not None:
            raise InvalidRequest(
                "Conversation already has an active response in progress: "
                f"{self._response.id}. Wait until the response is finished before creating "
                "a new one.", code="conversation_already_has_active_response")
        modalities = params.get("output_modalities") or self.config["output_modalities"]
        if (modalities == ["audio"]
                and self.config["audio"]["output"]["format"]["type"] != SIMULATED_FORMAT):
            raise InvalidRequest(
                "Output audio format is unsupported in simulator: set "
                f"session.audio.output.format to {{'type': '{SIMULATED_FORMAT}'}} first.",
                code="unsupported_in_simulator", param="session.audio.output.format")
        self._start_response(params)

    def _on_response_cancel(self, event: JsonDict, at: float) -> None:
        run = self._response
        wanted = event.get("response_id")
        if run is None or (wanted is not None and wanted != run.id):
            raise InvalidRequest("Cancellation failed: no active response found",
                                 code="response_cancel_not_active")
        self._cancel_response(run, "client_cancelled")

    def _start_response(self, params: JsonDict) -> None:
        conversation = params.get("conversation", "auto")
        instructions: str | None = params.get("instructions")
        output_audio = (params.get("audio") or {}).get("output") or {}
        # A conversation that already holds what the assistant said (replayed into a new
        # session after a drop, or a cached greeting) is past its first response.
        first = (conversation == "auto" and self._assistant_responses == 0
                 and not any(item.get("role") == "assistant" for item in self.conversation))
        if conversation == "auto":
            self._assistant_responses += 1
        tool_call = self._due_tool_call(params)
        text = ""
        if tool_call is None or tool_call.speak_first:
            text = self._script.text_for(session_instructions=self.config["instructions"],
                                         response_instructions=instructions,
                                         first_assistant_response=first)
        run = _ResponseRun(
            id=self._new_id("resp"), conversation=conversation,
            modalities=list(params.get("output_modalities") or self.config["output_modalities"]),
            voice=output_audio.get("voice") or self.config["audio"]["output"]["voice"],
            text=text,
            instructions_chars=len(self.config["instructions"]) + len(instructions or ""),
            metadata=params.get("metadata"),
            max_output_tokens=params.get("max_output_tokens",
                                         self.config["max_output_tokens"]),
            tool_call=tool_call,
        )
        self._response = run
        self._emit({"type": "response.created", "response": self._response_view(run)})
        run.task = asyncio.get_running_loop().create_task(self._produce_guarded(run))

    def _due_tool_call(self, params: JsonDict) -> ScriptedToolCall | None:
        tool_choice = params.get("tool_choice", self.config["tool_choice"])
        if tool_choice == "none" or params.get("conversation", "auto") != "auto":
            return None
        for call in self._tool_script:  # removed when emitted: a cancelled response keeps it
            if self._caller_turns >= call.after_caller_turn:
                return call
        return None

    async def _produce_guarded(self, run: _ResponseRun) -> None:
        """The producer task's top level: a simulator bug fails the response, not the socket."""
        try:
            await self._produce(run)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("engine sim session %s: response %s failed", self.id, run.id)
            if self._response is run:
                self._finish(run, "failed", None, error={
                    "type": "server_error", "code": "simulator_bug",
                    "message": "The simulator failed while producing this response."})

    async def _produce(self, run: _ResponseRun) -> None:
        clock = self._clock
        profile = self._profile()
        first_audio_at = clock.now() + profile.first_audio_ms(run.instructions_chars) / 1000
        says_something = run.tool_call is None or run.tool_call.speak_first
        synthesis: asyncio.Future[bytes] | None = None
        if says_something and run.audio_out:
            synthesis = asyncio.ensure_future(asyncio.to_thread(
                speech.synthesize, run.text, language_of(run.text), run.voice))
        try:
            await clock.sleep(first_audio_at - clock.now())
            audio = await synthesis if synthesis is not None else b""
        finally:
            if synthesis is not None and not synthesis.done():
                synthesis.cancel()
        if says_something:
            chunks = self._chunks(run, audio, profile.delta_ms)
            self._open_message_item(run, len(chunks))
            spacing_s = profile.delta_ms * max(0.0, profile.realtime_factor) / 1000
            started = clock.now()
            for index, chunk in enumerate(chunks):
                if index:
                    await clock.sleep(started + index * spacing_s - clock.now())
                self._emit_chunk(run, chunk)
            self._close_message_item(run, completed=True)
        if run.tool_call is not None:
            self._emit_function_call(run, run.tool_call)
        self._finish(run, "completed", None)

    @staticmethod
    def _chunks(run: _ResponseRun, audio: bytes, delta_ms: int) -> list[bytes | str]:
        if run.audio_out:
            size = max(1, delta_ms) * mulaw.BYTES_PER_MS
            return [audio[i:i + size] for i in range(0, len(audio), size)] or [b""]
        words = run.text.split(" ")
        return [" ".join(words[i:i + _TEXT_DELTA_WORDS]) + (" " if i + _TEXT_DELTA_WORDS
                                                           < len(words) else "")
                for i in range(0, len(words), _TEXT_DELTA_WORDS)]

    def _ids_of(self, run: _ResponseRun, item_id: str) -> JsonDict:
        return {"response_id": run.id, "item_id": item_id, "output_index": len(run.output),
                "content_index": 0}

    def _open_message_item(self, run: _ResponseRun, chunks_total: int) -> None:
        item: JsonDict = {"id": self._new_id("item"), "object": "realtime.item",
                          "type": "message", "status": "in_progress", "role": "assistant",
                          "content": []}
        run.item = item
        run.chunks_total = chunks_total
        self._emit({"type": "response.output_item.added", "response_id": run.id,
                    "output_index": len(run.output), "item": copy.deepcopy(item)})
        if run.conversation == "auto":
            self._add_to_conversation(item)
        if run.audio_out:
            self._produced_ms_by_item[item["id"]] = 0
            self._text_by_item[item["id"]] = run.text
            self._voice_locked = True
        part = ({"type": "audio", "transcript": ""} if run.audio_out
                else {"type": "text", "text": ""})
        self._emit({"type": "response.content_part.added", **self._ids_of(run, item["id"]),
                    "part": part})

    def _add_to_conversation(self, item: JsonDict) -> None:
        previous = self.conversation[-1]["id"] if self.conversation else None
        self.conversation.append(item)
        self._emit({"type": "conversation.item.added", "previous_item_id": previous,
                    "item": copy.deepcopy(item)})

    def _emit_chunk(self, run: _ResponseRun, chunk: bytes | str) -> None:
        assert run.item is not None
        item_id = run.item["id"]
        ids = self._ids_of(run, item_id)
        before = _split_point(len(run.text), run.chunks_sent, run.chunks_total)
        run.chunks_sent += 1
        if isinstance(chunk, str):
            self._emit({"type": "response.output_text.delta", **ids, "delta": chunk})
            return
        run.audio_ms_sent += len(chunk) // mulaw.BYTES_PER_MS
        self._produced_ms_by_item[item_id] = run.audio_ms_sent
        self._emit({"type": "response.output_audio.delta", **ids,
                    "delta": base64.b64encode(chunk).decode()})
        after = _split_point(len(run.text), run.chunks_sent, run.chunks_total)
        if after > before:
            self._emit({"type": "response.output_audio_transcript.delta", **ids,
                        "delta": run.text[before:after]})

    def _close_message_item(self, run: _ResponseRun, *, completed: bool) -> None:
        item = run.item
        assert item is not None
        ids = self._ids_of(run, item["id"])
        said = run.text if completed else run.text_said()
        if run.audio_out:
            self._emit({"type": "response.output_audio.done", **ids})
            self._emit({"type": "response.output_audio_transcript.done", **ids,
                        "transcript": said})
            part: JsonDict = {"type": "audio", "transcript": said}
            content: JsonDict = {"type": "output_audio", "transcript": said}
            truncated = [t for t in self.truncations if t.item_id == item["id"]]
            if truncated and run.audio_ms_sent:
                cut = truncated[-1].audio_end_ms
                content["transcript"] = run.text[:len(run.text) * cut // run.audio_ms_sent]
        else:
            self._emit({"type": "response.output_text.done", **ids, "text": said})
            part = {"type": "text", "text": said}
            content = {"type": "output_text", "text": said}
        self._emit({"type": "response.content_part.done", **ids, "part": part})
        item["status"] = "completed" if completed else "incomplete"
        item["content"] = [content]
        self._emit({"type": "response.output_item.done", "response_id": run.id,
                    "output_index": len(run.output), "item": copy.deepcopy(item)})
        if run.conversation == "auto":
            self._emit({"type": "conversation.item.done", "previous_item_id":
                        self._previous_id(item["id"]), "item": copy.deepcopy(item)})
        run.output.append(item)
        run.item = None

    def _previous_id(self, item_id: str) -> str | None:
        index = self._find(item_id)
        return self.conversation[index - 1]["id"] if index else None

    def _emit_function_call(self, run: _ResponseRun, call: ScriptedToolCall) -> None:
        self._tool_script.remove(call)
        call_id = self._new_id("call")
        item: JsonDict = {"id": self._new_id("item"), "object": "realtime.item",
                          "type": "function_call", "status": "in_progress", "name": call.name,
                          "call_id": call_id, "arguments": ""}
        output_index = len(run.output)
        self._emit({"type": "response.output_item.added", "response_id": run.id,
                    "output_index": output_index, "item": copy.deepcopy(item)})
        if run.conversation == "auto":
            self._add_to_conversation(item)
        arguments = json.dumps(call.arguments, separators=(",", ":"))
        ids = {"response_id": run.id, "item_id": item["id"], "output_index": output_index,
               "call_id": call_id}
        half = len(arguments) // 2
        for delta in (arguments[:half], arguments[half:]):
            if delta:
                self._emit({"type": "response.function_call_arguments.delta", **ids,
                            "delta": delta})
        self._emit({"type": "response.function_call_arguments.done", **ids, "name": call.name,
                    "arguments": arguments})
        item["status"] = "completed"
        item["arguments"] = arguments
        self._emit({"type": "response.output_item.done", "response_id": run.id,
                    "output_index": output_index, "item": copy.deepcopy(item)})
        if run.conversation == "auto":
            self._emit({"type": "conversation.item.done",
                        "previous_item_id": self._previous_id(item["id"]),
                        "item": copy.deepcopy(item)})
        run.output.append(item)

    def _cancel_response(self, run: _ResponseRun, reason: str) -> None:
        if run.task is not None:
            run.task.cancel()
        if run.item is not None:
            self._close_message_item(run, completed=False)
        self._finish(run, "cancelled", reason)

    def _finish(self, run: _ResponseRun, status: str, reason: str | None, *,
                error: JsonDict | None = None) -> None:
        self._response = None
        details: JsonDict | None = None
        if reason is not None:
            details = {"type": status, "reason": reason}
        elif error is not None:
            details = {"type": status, "error": error}
        self._emit({"type": "response.done",
                    "response": self._response_view(run, status, details, usage=True)})
        self._rate_requests_remaining = max(0, self._rate_requests_remaining - 1)
        self._emit({"type": "rate_limits.updated", "rate_limits": [
            {"name": "requests", "limit": 5000, "remaining": self._rate_requests_remaining,
             "reset_seconds": 0.012},
            {"name": "tokens", "limit": 800000, "remaining": 795000, "reset_seconds": 0.375},
        ]})

    def _response_view(self, run: _ResponseRun, status: str = "in_progress",
                       details: JsonDict | None = None, *, usage: bool = False) -> JsonDict:
        view: JsonDict = {
            "object": "realtime.response", "id": run.id, "status": status,
            "status_details": details, "output": copy.deepcopy(run.output),
            "conversation_id": self._conversation_id if run.conversation == "auto" else None,
            "output_modalities": run.modalities, "max_output_tokens": run.max_output_tokens,
            "audio": {"output": {"format": copy.deepcopy(self.config["audio"]["output"]
                                                          ["format"]),
                                 "voice": run.voice}},
            "usage": None, "metadata": run.metadata,
        }
        if usage:
            view["usage"] = self._usage(run)
        return view

    def _usage(self, run: _ResponseRun) -> JsonDict:
        text_in = run.instructions_chars // 4 + 4 * len(self.conversation)
        audio_in = self._audio_total_bytes // mulaw.BYTES_PER_MS // 100
        text_out = len(run.text_said() if run.audio_out else run.text) // 4
        audio_out = run.audio_ms_sent // 50
        return {
            "total_tokens": text_in + audio_in + text_out + audio_out,
            "input_tokens": text_in + audio_in, "output_tokens": text_out + audio_out,
            "input_token_details": {"text_tokens": text_in, "audio_tokens": audio_in,
                                    "cached_tokens": 0, "image_tokens": 0},
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }


def _required(event: JsonDict, name: str) -> Any:
    if name not in event or event[name] is None:
        raise InvalidRequest(f"Missing required parameter: '{name}'.",
                             code="missing_required_parameter", param=name)
    return event[name]
