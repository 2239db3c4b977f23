"""A simulated phone: plays one call against a Hotline server the way Twilio does.

The call, in Twilio's order:

1. Voice webhook: a form-encoded POST (or GET) of the call's parameters to the server,
   signed with `X-Twilio-Signature` (`twilio_requests`). A non-2xx answer or TwiML Twilio
   would reject ends the call with an "application error" (recorded, never raised).
2. TwiML, verb by verb: `<Say>` is spoken into what the caller hears, `<Pause>` waits,
   `<Connect><Stream>` opens the media stream; `<Hangup>`/`<Reject>` end the call.
   `<Dial>` bridges the call to the number for `dial_leg_ms` (a simulated far end that
   hangs up at once by default), then the TwiML goes on. `<Redirect>` fetches its URL
   (signed, `CallStatus=in-progress`) and runs that TwiML instead. `action` URLs and
   other verbs are recorded and end the simulation there.
3. Media stream: a WebSocket to the `<Stream>` URL, its upgrade signed like a GET, played
   by `PhoneStream` (media paced at 20 ms, marks echoed as the `Playout` plays).

Call control from outside, as Twilio's REST API does it (`TwilioApiSimulator` calls these):
`PhoneCall.complete()` ends the call (`Status=completed`): the stream gets `stop` and is
closed from Twilio's side. `PhoneCall.redirect(twiml=…)` / `redirect(url=…)` ends the verb
that is running (a stream gets `stop` and is closed the same way) and runs the new TwiML.
`PhoneCallResult.ended_by` says who ended the call: `phone` (the script or `hangup()`),
`api` (`complete()`) or `server` (its TwiML ran out or hung up).

`PhoneCall` owns the HTTP client and the call's task; the microphone runs in that task.
All times in a `PhoneCallResult` are the phone's `SimClock` seconds (`*_at`):
`time.monotonic()` at speed 1, the server's clock too when both run in one process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from hotline.audio import mulaw
from hotline.sim import speech
from hotline.sim.call_result import DialRecord, PhoneCallResult, TwimlUpdate
from hotline.sim.call_webhooks import CallWebhooks
from hotline.sim.clock import REAL_TIME, SimClock
from hotline.sim.phone_stream import PhoneStream, open_stream
from hotline.sim.playout import Playout
from hotline.sim.script import CallScript, ScriptRunner
from hotline.sim.twilio_requests import new_call_sid
from hotline.sim.twiml import (
    Connect,
    Dial,
    Hangup,
    OtherVerb,
    Pause,
    Redirect,
    Reject,
    Say,
    StartStream,
    Stream,
    Twiml,
    TwimlError,
    parse_twiml,
)

log = logging.getLogger(__name__)


class SimulatedPhone:
    """Places simulated calls to one server. Many calls may run at once.

    `connect_to` (`http://host:port`): send every request and stream connection there,
    whatever host the URLs name, while signing the URLs as given. `dial_leg_ms`: how long
    the far end of a `<Dial>` stays on the line before it hangs up. `clock`: the simulated
    time the calls run on (media pacing, playout, script pauses, every `*_at`). `call_listeners` are
    told of every call this phone starts (`TwilioApiSimulator.attach_phone` uses this to
    make the calls known to the REST API).
    """

    def __init__(self, *, server_url: str, auth_token: str, account_sid: str,
                 http: httpx.AsyncClient | None = None, connect_to: str | None = None,
                 dial_leg_ms: int = 0, clock: SimClock = REAL_TIME) -> None:
        self.server_url = server_url.rstrip("/")
        self.auth_token = auth_token
        self.account_sid = account_sid
        self.connect_to = connect_to
        self.dial_leg_ms = dial_leg_ms
        self.clock = clock
        self.call_listeners: list[Callable[[PhoneCall], None]] = []
        self._http = http

    async def call(self, *, to: str, from_: str, script: CallScript, direction: str = "inbound",
                   call_sid: str | None = None, webhook_url: str | None = None,
                   status_callback: str | None = None, forge_signature: bool = False,
                   extra_params: dict[str, str] | None = None) -> PhoneCallResult:
        """Play one call to the end and return what happened (never raises for the server)."""
        call = self.start_call(
            to=to, from_=from_, script=script, direction=direction, call_sid=call_sid,
            webhook_url=webhook_url, status_callback=status_callback,
            forge_signature=forge_signature, extra_params=extra_params)
        return await call.wait()

    def start_call(self, *, to: str, from_: str, script: CallScript,
                   direction: str = "inbound", call_sid: str | None = None,
                   webhook_url: str | None = None, webhook_method: str = "POST",
                   twiml: str | None = None, call_status: str | None = None,
                   status_callback: str | None = None, status_callback_method: str = "POST",
                   forge_signature: bool = False,
                   extra_params: dict[str, str] | None = None) -> PhoneCall:
        """Start a call as a task; the returned `PhoneCall` can be hung up or awaited.

        `twiml`: run this TwiML instead of fetching the webhook (Calls.create `Twiml=`).
        `call_status`: the webhook's `CallStatus` (default `ringing` inbound, else
        `in-progress`).
        """
        call = PhoneCall(
            phone=self, to=to, from_=from_, script=script, direction=direction,
            call_sid=call_sid or new_call_sid(),
            webhook_url=webhook_url or f"{self.server_url}/twilio/voice",
            webhook_method=webhook_method.upper(), twiml=twiml,
            call_status=call_status or ("ringing" if direction == "inbound" else "in-progress"),
            status_callback=status_callback, status_callback_method=status_callback_method,
            forge_signature=forge_signature, extra_params=dict(extra_params or {}))
        call.start()
        for listener in self.call_listeners:
            listener(call)
        return call


@dataclass(slots=True)
class _PendingUpdate:
    """TwiML the call switches to once the running verb has ended."""

    at: float
    source: str  # "api" | "redirect"
    twiml: str | None = None
    url: str | None = None
    method: str = "POST"


class PhoneCall:
    """One call in progress: `await wait()` for its result, or control it from outside.

    `hangup()`: the person on the phone hangs up. `complete()` and `redirect()`: what
    Twilio does on a REST update (`Status=completed`, `Twiml`/`Url`).
    """

    def __init__(self, *, phone: SimulatedPhone, to: str, from_: str, script: CallScript,
                 direction: str, call_sid: str, webhook_url: str, webhook_method: str,
                 twiml: str | None, call_status: str, status_callback: str | None,
                 status_callback_method: str, forge_signature: bool,
                 extra_params: dict[str, str]) -> None:
        self._phone = phone
        self._clock = phone.clock
        self._script = script
        self._twiml = twiml
        self._call_status = call_status
        self._status_callback = status_callback
        self._status_callback_method = status_callback_method
        self._forge = forge_signature
        self.result = PhoneCallResult(
            call_sid=call_sid, account_sid=phone.account_sid, direction=direction,
            from_number=from_, to_number=to,
            webhook_url=None if twiml is not None else webhook_url,
            webhook_method=webhook_method, signature_forged=forge_signature)
        self._hangup = asyncio.Event()
        # Set with `_hangup` or a pending update: whatever verb is running ends now.
        self._interrupt = asyncio.Event()
        self._update: _PendingUpdate | None = None
        self._executing = False  # a TwiML document has started to run (call answered)
        self._beep_ended = asyncio.Event()
        self._playout = Playout()
        self._heard_taken = 0  # playout segments already copied into the result
        self._runner: ScriptRunner | None = None
        self._task: asyncio.Task[PhoneCallResult] | None = None
        self._log = logging.LoggerAdapter(log, {"call_sid": call_sid})
        self._webhooks = CallWebhooks(
            self.result, auth_token=phone.auth_token, connect_to=phone.connect_to,
            forge=forge_signature, extra_params=extra_params, on_error=self._application_error,
            clock=phone.clock)

    @property
    def call_sid(self) -> str:
        return self.result.call_sid

    @property
    def task(self) -> asyncio.Task[PhoneCallResult]:
        assert self._task is not None, "PhoneCall.start() not called"
        return self._task

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name=f"phone-call-{self.call_sid}")

    def hangup(self) -> None:
        """The caller hangs up: the phone sends `stop` and closes the stream (if open)."""
        self._end("phone")

    def complete(self) -> None:
        """REST `Status=completed`: Twilio ends the call (`stop`, then it closes the stream)."""
        self._end("api")

    def redirect(self, *, twiml: str | None = None, url: str | None = None,
                 method: str = "POST") -> None:
        """REST `Twiml`/`Url` update: end the running verb, then run the new TwiML.

        `url` is fetched like the voice webhook (signed, `CallStatus=in-progress`); with
        both, `url` wins, as on Twilio. A later update replaces one not yet taken.
        """
        if twiml is None and url is None:
            raise ValueError("redirect needs twiml or url")
        self._update = _PendingUpdate(
            at=self._clock.now(), source="api", twiml=None if url else twiml, url=url,
            method=method.upper())
        self._interrupt.set()

    @property
    def in_progress(self) -> bool:
        """Answered (its TwiML is running) and not over: what Twilio calls `in-progress`."""
        return self._executing and not self._hangup.is_set() and not self.done()

    async def wait_beep_ended(self) -> float:
        """When the callee's first `Beep` step ended (waits for it; monotonic seconds)."""
        await self._beep_ended.wait()
        assert self.result.beep_ended_at is not None
        return self.result.beep_ended_at

    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def _end(self, by: str) -> None:
        """End the call; the first to end it is who ended it."""
        if self.result.ended_by is None:
            self.result.ended_by = by
        self._hangup.set()
        self._interrupt.set()

    async def wait(self) -> PhoneCallResult:
        return await asyncio.shield(self.task)

    async def run(self) -> PhoneCallResult:
        result = self.result
        http = self._phone._http
        own_http = http is None
        if http is None:
            http = httpx.AsyncClient(trust_env=False)
        try:
            try:
                await self._run(http)
            except Exception as exc:  # the simulator's own bug: record it, end the call
                self._log.exception("simulated call failed")
                result.failure = f"{type(exc).__name__}: {exc}"
            finally:
                result.ended_at = self._clock.now()
                if result.ended_by is None and result.failure is None:
                    result.ended_by = "server"  # its TwiML ran out, or hung up
            if self._status_callback:
                await self._webhooks.send_completed_callback(
                    http, self._status_callback, self._status_callback_method)
        finally:
            if own_http:
                await http.aclose()
        return result

    # -- the call, verb by verb -------------------------------------------------------------
    async def _run(self, http: httpx.AsyncClient) -> None:
        result = self.result
        self._runner = await asyncio.to_thread(ScriptRunner, self._script)
        if self._twiml is not None:
            text: str | None = self._twiml
            result.twiml_received_at = self._clock.now()
        else:
            text = await self._webhooks.fetch_twiml(http, self._call_status)
        if text is None:
            return
        result.twiml = text
        document = self._parse(text)
        if document is not None:
            result.heard_origin_at = result.twiml_received_at
            self._executing = True
        while document is not None:
            document = await self._execute(document, http)

    def _parse(self, text: str) -> Twiml | None:
        try:
            document = parse_twiml(text)
        except TwimlError as exc:
            self._application_error(exc.code, exc.message)
            return None
        result = self.result
        result.verbs.extend(document.describe())
        result.say_texts.extend(document.say_texts)
        result.hangup_verb = result.hangup_verb or document.has_hangup
        result.dial_numbers.extend(document.dial_numbers)
        result.redirect_urls.extend(document.redirect_urls)
        return document

    async def _execute(self, document: Twiml, http: httpx.AsyncClient) -> Twiml | None:
        """Run one document's verbs; returns the TwiML to run next, None when the call ends."""
        result = self.result
        for verb in document.verbs:
            if self._hangup.is_set():
                return None
            if self._update is not None:
                break
            match verb:
                case Say():
                    await self._say(verb)
                case Pause(length_s=length_s):
                    await self._wait_or_interrupt(length_s)
                case Connect(stream=Stream() as stream):
                    await self._stream(stream)
                    if self._interrupt.is_set():
                        continue  # hung up or updated: the loop's checks say which
                    if result.closed_by != "server":
                        return None  # the stream never opened: an application error
                    if verb.action:
                        result.unexecuted_verb = "Connect action"
                        result.warnings.append(f"<Connect action={verb.action!r}> not followed")
                        return None
                case Dial():
                    if not await self._dial(verb):
                        return None
                case Redirect(url=url, method=method):
                    self._update = _PendingUpdate(at=self._clock.now(), source="redirect",
                                                  url=url, method=method)
                    break
                case Hangup() | Reject():
                    return None
                case StartStream():
                    result.warnings.append("<Start><Stream> is not simulated; skipped")
                case Connect() | OtherVerb():
                    name = verb.name if isinstance(verb, OtherVerb) else type(verb).__name__
                    result.unexecuted_verb = name
                    return None
        return await self._take_update(http)

    async def _take_update(self, http: httpx.AsyncClient) -> Twiml | None:
        """The pending update's TwiML (fetched if it names a URL); None: the call ends."""
        while (update := self._update) is not None and not self._hangup.is_set():
            self._update = None
            self._interrupt.clear()  # not hung up (checked above): the new TwiML may run
            text = update.twiml
            if update.url is not None:
                text = await self._webhooks.fetch_update(http, update.url, update.method)
            self.result.twiml_updates.append(TwimlUpdate(update.at, update.source, update.url,
                                                         text))
            if self._update is not None:
                continue  # replaced by a newer update while this one was fetched
            return self._parse(text) if text is not None else None
        return None

    async def _dial(self, verb: Dial) -> bool:
        """Bridge to the number for `dial_leg_ms`; False when the call ends here."""
        record = DialRecord(at=self._clock.now(), number=verb.number)
        self.result.dials.append(record)
        await self._wait_or_interrupt(self._phone.dial_leg_ms / 1000)
        record.ended_at = self._clock.now()
        action = verb.attributes.get("action")
        if action and not self._interrupt.is_set():
            self.result.unexecuted_verb = "Dial action"
            self.result.warnings.append(f"<Dial action={action!r}> not followed")
            return False
        return True

    def _application_error(self, code: int, message: str) -> None:
        self.result.application_error = message
        self.result.application_error_code = code
        self._log.info("application error %d: %s", code, message)

    async def _say(self, verb: Say) -> None:
        language = (verb.language or "en").split("-")[0].lower()
        audio = await asyncio.to_thread(speech.synthesize, verb.text, language, verb.voice or "")
        audio *= max(1, verb.loop)
        if self._interrupt.is_set():
            return  # hung up or updated while the speech was being made
        started = self._clock.now()
        segments = self.result.heard_segments
        segments.append((started, audio))
        index = len(segments) - 1
        await self._wait_or_interrupt(len(audio) / (mulaw.BYTES_PER_MS * 1000))
        if self._interrupt.is_set():  # cut off: the caller heard only the start
            cut = int((self._clock.now() - started) * 1000 * mulaw.BYTES_PER_MS)
            segments[index] = (started, audio[:cut])

    async def _wait_or_interrupt(self, seconds: float) -> None:
        """A verb that takes time: it ends early on a hang-up or an update."""
        await self._clock.wait(self._interrupt, seconds)

    # -- the media stream -------------------------------------------------------------------
    async def _stream(self, stream: Stream) -> None:
        result = self.result
        ws = await open_stream(stream, result, auth_token=self._phone.auth_token,
                               connect_to=self._phone.connect_to, forge=self._forge,
                               on_error=self._application_error)
        if ws is None:
            return
        result.socket_open_at = self._clock.now()
        assert self._runner is not None
        try:
            await PhoneStream(ws, result=result, playout=self._playout, runner=self._runner,
                              interrupt=self._interrupt, hang_up=self.hangup,
                              beep_ended=self._beep_ended, log=self._log,
                              clock=self._clock).run()
        finally:
            # One playout for the whole call (the script counts agent audio per call);
            # audio still queued when a stream ends never plays.
            end = result.socket_closed_at or self._clock.now()
            unplayed = self._playout.finish(end * 1000)
            result.unplayed_ms_at_end += unplayed / mulaw.BYTES_PER_MS
            result.played_ms = self._playout.played_ms(end * 1000)
            heard = self._playout.heard()
            result.heard_segments.extend(
                (start_ms / 1000, audio) for start_ms, audio in heard[self._heard_taken:])
            self._heard_taken = len(heard)
            result.script_log = self._runner.log
