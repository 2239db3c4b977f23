"""The phone's side of one Twilio Media Stream: the WebSocket after `<Connect><Stream>`.

The phone sends `connected`, `start`, a `media` frame every 20 ms (paced on the call's
`SimClock` without drift: frame k goes at t0 + k·20 ms) carrying what the call script
says, `dtmf` for key presses, and `stop` before it hangs up. What the server sends is
played out at the clock's pace (`Playout`): marks come back when the audio before them has
played, `clear` drops the unplayed audio and returns every pending mark at once.

`PhoneStream` owns the socket and two tasks (the socket reader and the mark echoer); the
microphone runs in the caller's task. The call's `Playout` and `PhoneCallResult` outlive
the stream: one call may open several streams (after an update).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

import orjson
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException

from hotline.audio import mulaw
from hotline.sim.call_result import (
    ClearRecord,
    DtmfSent,
    MarkEchoed,
    MediaReceived,
    PhoneCallResult,
    ProtocolErrorRecord,
)
from hotline.sim.clock import SimClock
from hotline.sim.playout import Playout
from hotline.sim.script import AgentAudio, ScriptRunner
from hotline.sim.twilio_requests import route, twilio_signature
from hotline.sim.twiml import Stream

FRAME_S = mulaw.FRAME_MS / 1000
STREAM_USER_AGENT = "Twilio.TmeWs/1.0"

# Twilio error codes the stream reports (https://www.twilio.com/docs/api/errors/NNNNN)
STREAM_HANDSHAKE_ERROR = 31920
STREAM_INVALID_SCHEME = 31922
STREAM_PROTOCOL_ERROR = 31924


def new_stream_sid() -> str:
    return "MZ" + secrets.token_hex(16)


async def open_stream(stream: Stream, result: PhoneCallResult, *, auth_token: str,
                      connect_to: str | None, forge: bool,
                      on_error: Callable[[int, str], None]) -> ClientConnection | None:
    """Open `<Stream>`'s socket, its upgrade signed like a GET; None: an application error."""
    url = stream.url
    parts = urlsplit(url)
    result.stream_url = url
    result.stream_url_is_wss = parts.scheme == "wss"
    result.custom_parameters = dict(stream.parameters)
    if parts.scheme not in ("ws", "wss"):
        on_error(STREAM_INVALID_SCHEME, f"stream URL scheme is not wss: {url}")
        return None
    if parts.scheme != "wss":
        result.warnings.append(f"{STREAM_INVALID_SCHEME}: stream URL is not wss:// ({url})")
    if parts.query:
        result.warnings.append(f"stream URL has a query string, which Twilio does not "
                               f"support ({url}); use <Parameter>")
    signature = twilio_signature(auth_token, url, forge=forge)
    try:
        return await websockets.connect(
            route(url, connect_to),
            additional_headers={"X-Twilio-Signature": signature},
            user_agent_header=STREAM_USER_AGENT, compression=None, proxy=None,
            open_timeout=10, ping_interval=None, close_timeout=5)
    except (WebSocketException, OSError, TimeoutError) as exc:
        on_error(STREAM_HANDSHAKE_ERROR, f"stream handshake failed: {type(exc).__name__}: {exc}")
        return None


class PhoneStream:
    """One open stream socket, from `connected` to the close.

    `interrupt` is set when the running verb must end (a hang-up or a TwiML update);
    `hang_up` is called when the script hangs up; `beep_ended` is set when the script's
    first `Beep` step has ended.
    """

    def __init__(self, ws: ClientConnection, *, result: PhoneCallResult, playout: Playout,
                 runner: ScriptRunner, interrupt: asyncio.Event, hang_up: Callable[[], None],
                 beep_ended: asyncio.Event, log: logging.LoggerAdapter[logging.Logger],
                 clock: SimClock) -> None:
        self._ws = ws
        self._result = result
        self._playout = playout
        self._runner = runner
        self._interrupt = interrupt
        self._hang_up = hang_up
        self._beep_ended = beep_ended
        self._log = log
        self._clock = clock
        self._stream_sid = new_stream_sid()
        result.stream_sid = self._stream_sid
        self._sequence = 0
        self._server_closed = False
        self._phone_closing = False
        self._marks_changed = asyncio.Event()

    async def run(self) -> None:
        """Talk until someone hangs up, then close (or see the server close) the socket."""
        result = self._result
        ws = self._ws
        reader = asyncio.create_task(self._read(), name=f"phone-read-{result.call_sid}")
        echoer = asyncio.create_task(self._echo_marks(), name=f"phone-marks-{result.call_sid}")
        try:
            await self._talk()
            if not self._server_closed:
                with contextlib.suppress(ConnectionClosed):
                    await self._send("stop", {"stop": {
                        "accountSid": result.account_sid, "callSid": result.call_sid}})
                    result.stop_sent_at = self._clock.now()
                self._phone_closing = True
                await ws.close(code=1000)
            await asyncio.wait_for(asyncio.shield(reader), timeout=10)
        finally:
            for task in (echoer, reader):
                task.cancel()
            await asyncio.gather(echoer, reader, return_exceptions=True)
            if ws.state is not websockets.State.CLOSED:
                self._phone_closing = True
                await ws.close()

    async def _send(self, event: str, body: dict[str, object]) -> None:
        """Every message after `connected` carries the next sequenceNumber, as a string."""
        self._sequence += 1
        message = {"event": event, "sequenceNumber": str(self._sequence),
                   "streamSid": self._stream_sid, **body}
        await self._ws.send(orjson.dumps(message).decode())

    async def _talk(self) -> None:
        """`connected`, `start`, then a media frame every 20 ms until someone hangs up."""
        result = self._result
        runner = self._runner
        try:
            await self._ws.send(orjson.dumps(
                {"event": "connected", "protocol": "Call", "version": "1.0.0"}).decode())
            await self._send("start", {"start": {
                "accountSid": result.account_sid,
                "streamSid": self._stream_sid,
                "callSid": result.call_sid,
                "tracks": ["inbound"],
                "customParameters": result.custom_parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            }})
            t0 = result.start_sent_at = self._clock.now()
            chunk = 1
            while True:
                due = t0 + chunk * FRAME_S
                delay = due - self._clock.now()
                if delay > 0:
                    await self._clock.sleep(delay)
                if self._interrupt.is_set() or self._server_closed:
                    return
                now = self._clock.now()
                result.max_send_lag_ms = max(result.max_send_lag_ms, (now - due) * 1000)
                now_ms = now * 1000
                tick = runner.tick(now_ms, AgentAudio(self._playout.played_ms(now_ms),
                                                      self._playout.last_heard_ms(now_ms)))
                self._note_beep()
                for digit in tick.digits:
                    await self._send("dtmf", {"dtmf": {"track": "inbound_track",
                                                       "digit": digit}})
                    result.dtmf_sent.append(DtmfSent(self._clock.now(), digit))
                if tick.hangup or tick.frame is None:
                    self._hang_up()
                    return
                await self._send("media", {"media": {
                    "track": "inbound",
                    "chunk": str(chunk),
                    "timestamp": str((chunk - 1) * mulaw.FRAME_MS),
                    "payload": base64.b64encode(tick.frame).decode(),
                }})
                result.caller_audio += tick.frame
                result.frames_sent += 1
                chunk += 1
        except ConnectionClosed:
            self._server_closed = True

    def _note_beep(self) -> None:
        """The callee's beep just ended: what DetectMessageEnd AMD is waiting for."""
        beep_ended_ms = self._runner.beep_ended_ms
        if beep_ended_ms is not None and self._result.beep_ended_at is None:
            self._result.beep_ended_at = beep_ended_ms / 1000
            self._beep_ended.set()

    async def _read(self) -> None:
        result = self._result
        ws = self._ws
        try:
            async for message in ws:
                self._on_message(message)
        except ConnectionClosed:
            pass
        finally:
            result.socket_closed_at = self._clock.now()
            if self._phone_closing and ws.protocol.close_rcvd_then_sent is not True:
                result.closed_by = "phone"
            else:
                result.closed_by = "server"
                self._server_closed = True
            result.close_code = ws.protocol.close_code
            result.close_reason = ws.protocol.close_reason
            self._log.debug("stream closed by %s (%s)", result.closed_by, result.close_code)

    def _on_message(self, message: str | bytes) -> None:
        now = self._clock.now()
        if isinstance(message, bytes):
            self._protocol_error(now, "binary frame; Twilio expects JSON text frames",
                                 repr(message[:60]))
            return
        try:
            data = orjson.loads(message)
        except orjson.JSONDecodeError:
            self._protocol_error(now, "frame is not JSON", message)
            return
        if not isinstance(data, dict):
            self._protocol_error(now, "frame is not a JSON object", message)
            return
        event = data.get("event")
        if event not in ("media", "mark", "clear"):
            self._protocol_error(now, f"unexpected event {event!r}", message)
            return
        if data.get("streamSid") != self._stream_sid:
            self._protocol_error(now, f"streamSid {data.get('streamSid')!r} is not this "
                                      f"stream's ({self._stream_sid})", message)
            return
        now_ms = now * 1000
        if event == "media":
            media = data.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str):
                self._protocol_error(now, "media without a media.payload string", message)
                return
            try:
                audio = base64.b64decode(payload, validate=True)
            except binascii.Error:
                self._protocol_error(now, "media.payload is not base64", message)
                return
            self._result.media_received.append(MediaReceived(now, len(audio)))
            if self._result.first_media_at is None:
                self._result.first_media_at = now
            self._playout.enqueue_audio(audio, now_ms)
        elif event == "mark":
            mark = data.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                self._protocol_error(now, "mark without a mark.name string", message)
                return
            self._playout.enqueue_mark(name, now_ms)
            self._marks_changed.set()
        else:
            outcome = self._playout.clear(now_ms)
            self._result.clears.append(ClearRecord(now, outcome.played_ms, outcome.dropped_ms,
                                                   outcome.flushed))
            self._marks_changed.set()

    def _protocol_error(self, now: float, message: str, frame: str) -> None:
        self._result.protocol_errors.append(
            ProtocolErrorRecord(now, STREAM_PROTOCOL_ERROR, message, frame[:200]))
        self._log.info("protocol error %d: %s", STREAM_PROTOCOL_ERROR, message)

    async def _echo_marks(self) -> None:
        """Send each mark back when it is due; the only task that echoes, so order holds."""
        changed = self._marks_changed
        while True:
            changed.clear()
            now = self._clock.now()
            for mark in self._playout.pop_due_marks(now * 1000):
                try:
                    await self._send("mark", {"mark": {"name": mark.name}})
                except ConnectionClosed:
                    return
                self._result.marks_echoed.append(MarkEchoed(
                    mark.name, mark.received_ms / 1000, self._clock.now(), mark.flushed))
            due_ms = self._playout.next_mark_due_ms()
            timeout = None if due_ms is None else due_ms / 1000 - self._clock.now()
            await self._clock.wait(changed, timeout)
