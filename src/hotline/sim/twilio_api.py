"""A simulated Twilio REST API (the Calls resource) that places calls with `SimulatedPhone`.

Faithful enough that the official `twilio` SDK, sync or async, works against it once
pointed at it (`client.api.base_url = sim.url`):

    POST /2010-04-01/Accounts/{AccountSid}/Calls.json          create a call (201)
    GET  /2010-04-01/Accounts/{AccountSid}/Calls.json          list calls
    GET  /2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json    fetch one
    POST /2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json    update: Status, Url, Twiml

HTTP Basic auth (AccountSid:AuthToken). Errors use Twilio's JSON shape
(`{"code", "message", "more_info", "status"}`): 20003 bad credentials (401), 20404 unknown
call (404), 21201/21213/21205 missing To/From/Url (400), 21220 redirecting a call that is
not in progress (ringing or ended).

After a create the call runs in the background like Twilio's: status callbacks for the
requested `StatusCallbackEvent`s (`initiated`, `ringing`, `answered`, `completed`; default
`completed`), each signed and form-encoded with `SequenceNumber` from 0, `Timestamp` and
`CallbackSource`; after `ring_ms` the callee answers (or the number's outcome is `busy`,
`no-answer` or `failed`) and a `SimulatedPhone` plays the call: it fetches `Url` with
`CallStatus=in-progress` and `Direction=outbound-api` (or runs inline `Twiml`) and follows
the callee's `CallScript`.

Inbound calls too: `attach_phone(phone)` makes every call that phone places known here
(`direction` `inbound`, `ringing` until its TwiML runs, then `in-progress`), so the server
can fetch and update them like the calls it created. Every update is kept in `updates`
(`CallUpdate`, with the `clock` time it arrived). On a live call, `Status=completed` ends
it: the stream gets `stop` and Twilio's side closes it (`PhoneCallResult.ended_by ==
"api"`). `Twiml` or `Url` ends the running verb (a stream: `stop`, closed) and runs the
new TwiML; `<Dial>` there bridges the call (`PhoneCallResult.dials`) and the call
completes when the far end hangs up.

Answering machine detection: `MachineDetection` gives the number's `answered_by` verdict
(default `human`). Synchronous, it rides on the Url webhook as `AnsweredBy`. With
`AsyncAmd=true` it is POSTed to `AsyncAmdStatusCallback` with `MachineDetectionDuration`:
`amd_ms` after the answer, except for `machine_end_*` verdicts under
`DetectMessageEnd`, which wait for the callee's script to finish its `Beep` (the end of
the voicemail greeting) and report the time from answer to then; no beep within
`MachineDetectionTimeout` (default 30 s) gives `unknown`. `Enable` mode never reports the
end of a message, so a `machine_end_*` verdict becomes `machine_start` there. The phone's
result records when the verdict was sent (`amd_callback_at`, `amd_answered_by`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import email.utils
import hmac
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hotline.local_server import LocalServer
from hotline.sim.call_result import CallbackRecord, PhoneCallResult
from hotline.sim.clock import REAL_TIME, SimClock
from hotline.sim.phone import PhoneCall, SimulatedPhone
from hotline.sim.script import CallScript
from hotline.sim.twilio_requests import (
    API_VERSION,
    new_call_sid,
    rfc2822_now,
    send_twilio_request,
)

log = logging.getLogger(__name__)

CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
UNANSWERED_OUTCOMES = frozenset({"busy", "no-answer", "failed"})
MESSAGE_END_VERDICTS = frozenset({"machine_end_beep", "machine_end_silence",
                                  "machine_end_other"})
DEFAULT_MACHINE_DETECTION_TIMEOUT_S = 30.0
_REPEATABLE = frozenset({"StatusCallbackEvent", "RecordingStatusCallbackEvent"})


def twilio_error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message,
         "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
        status_code=status)


@dataclass(slots=True)
class CallUpdate:
    """One `POST /Calls/{Sid}.json`, as it arrived, and the HTTP status it was answered."""

    at: float  # when the request arrived, on the simulator's clock
    call_sid: str
    params: dict[str, str | list[str]]
    http_status: int | None = None


@dataclass(slots=True)
class SimulatedCall:
    """One call the API knows: its parameters, resource fields and lifecycle.

    Created through the API (`outbound-api`), or placed by an attached phone (`inbound`:
    no create parameters; the phone drives it).
    """

    sid: str
    params: dict[str, str | list[str]]
    to: str
    from_: str
    events: frozenset[str]
    direction: str = "outbound-api"
    placed_by_phone: bool = False  # an attached phone's call: its status follows the phone
    status: str = "queued"
    date_created: str = field(default_factory=rfc2822_now)
    date_updated: str = field(default_factory=rfc2822_now)
    start_time: str | None = None
    end_time: str | None = None
    duration: str | None = None
    answered_by: str | None = None  # on the resource once AMD has decided
    amd_verdict: str | None = None  # what AMD will decide (MachineDetection requested)
    answered_at: float | None = None
    sequence: int = 0
    phone_call: PhoneCall | None = None
    hangup_requested: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    callbacks: asyncio.Queue[tuple[str, dict[str, str]] | None] = field(
        default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    def param(self, name: str, default: str = "") -> str:
        value = self.params.get(name, default)
        return value[-1] if isinstance(value, list) else value


class TwilioApiSimulator:
    """The Twilio Calls API, served on `url`; `async with` starts and stops it.

    `callee_scripts`: what the person at each To number does once they answer (default
    `CallScript.default_callee()`). `outcomes`: per To number, `busy`, `no-answer` or
    `failed` instead of an answer. `answered_by`: the AMD verdict per To number when
    MachineDetection is requested (default `human`); with AsyncAmd=true it is POSTed to
    AsyncAmdStatusCallback `amd_ms` after the answer. `application_urls`: the voice URL of
    each ApplicationSid a call may name instead of Url. `server_url_for_phone`: where the
    callee's phone actually sends its requests and stream (scheme + host + port), whatever
    host `Url`, `StatusCallback` and the stream URL name; signatures still cover the URLs
    as given. None: use the URLs as given. `dial_leg_ms`: how long the far end of a
    `<Dial>` stays on the line (see `SimulatedPhone`). `clock`: the simulated time of the
    calls (ringing, AMD, every `at`), shared with their phone.
    """

    def __init__(self, *, account_sid: str, auth_token: str, ring_ms: int = 300,
                 callee_scripts: Mapping[str, CallScript] | None = None,
                 outcomes: Mapping[str, str] | None = None,
                 answered_by: Mapping[str, str] | None = None,
                 amd_ms: int = 1200,
                 application_urls: Mapping[str, str] | None = None,
                 server_url_for_phone: str | None = None, dial_leg_ms: int = 0,
                 clock: SimClock = REAL_TIME) -> None:
        for number, outcome in (outcomes or {}).items():
            if outcome not in UNANSWERED_OUTCOMES:
                raise ValueError(f"outcome for {number} must be one of "
                                 f"{sorted(UNANSWERED_OUTCOMES)}, got {outcome!r}")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.ring_ms = ring_ms
        self.callee_scripts: dict[str, CallScript] = dict(callee_scripts or {})
        self.outcomes: dict[str, str] = dict(outcomes or {})
        self.answered_by: dict[str, str] = dict(answered_by or {})
        self.amd_ms = amd_ms
        self.application_urls: dict[str, str] = dict(application_urls or {})
        self.server_url_for_phone = server_url_for_phone
        self.dial_leg_ms = dial_leg_ms
        self.clock = clock
        self.created: list[dict[str, str | list[str]]] = []
        self.updates: list[CallUpdate] = []
        self.callbacks: list[CallbackRecord] = []
        self.results: dict[str, PhoneCallResult] = {}
        self.calls: dict[str, SimulatedCall] = {}
        self._server = LocalServer(self._app())
        self._http: httpx.AsyncClient | None = None
        self._phone: SimulatedPhone | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._http = httpx.AsyncClient(trust_env=False)
        self._phone = SimulatedPhone(
            server_url=self.server_url_for_phone or "http://127.0.0.1",
            auth_token=self.auth_token, account_sid=self.account_sid, http=self._http,
            connect_to=self.server_url_for_phone, dial_leg_ms=self.dial_leg_ms,
            clock=self.clock)
        self.url = await self._server.start(host, port)
        return self.url

    async def stop(self) -> None:
        """Hang up live calls (briefly waiting for them to end), then stop serving."""
        live = [call for call in self.calls.values() if call.task and not call.task.done()]
        for call in live:
            call.hangup_requested.set()
            if call.phone_call is not None:
                call.phone_call.hangup()
        tasks = [call.task for call in live if call.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=3)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._server.stop()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> TwilioApiSimulator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    def attach_phone(self, phone: SimulatedPhone) -> SimulatedPhone:
        """Make the calls `phone` places (inbound) fetchable and updatable here.

        Only calls started after attaching are known. The phone must be in this account.
        """
        if phone.account_sid != self.account_sid:
            raise ValueError(f"the phone's account {phone.account_sid} is not this "
                             f"API's ({self.account_sid})")
        if phone.clock != self.clock:
            raise ValueError("the phone's clock is not this API's")
        phone.call_listeners.append(self._adopt)
        return phone

    async def wait_for_call(
            self, call_sid: str, timeout: float = 30.0,  # noqa: ASYNC109 (fixed public API)
    ) -> PhoneCallResult:
        """The call's result once it has ended (raises KeyError / TimeoutError)."""
        call = self.calls[call_sid]
        await asyncio.wait_for(call.done.wait(), timeout=timeout)
        return self.results[call_sid]

    # -- HTTP ----------------------------------------------------------------------------
    def _app(self) -> Starlette:
        calls = "/2010-04-01/Accounts/{account_sid}/Calls.json"
        call = "/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json"
        return Starlette(routes=[
            Route(calls, self._create_or_list, methods=["GET", "POST"]),
            Route(call, self._fetch_or_update, methods=["GET", "POST"]),
        ])

    def _authenticate(self, request: Request) -> JSONResponse | None:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = password = ""
        valid = (scheme.lower() == "basic"
                 and hmac.compare_digest(user.encode(), self.account_sid.encode())
                 and hmac.compare_digest(password.encode(), self.auth_token.encode())
                 and request.path_params["account_sid"] == self.account_sid)
        if valid:
            return None
        response = twilio_error(401, 20003, "Authenticate")
        response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return response

    async def _create_or_list(self, request: Request) -> Response:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        if request.method == "GET":
            return self._list(request)
        params = _form(await request.body())
        self.created.append(params)
        to, from_ = _single(params, "To"), _single(params, "From")
        if not to:
            return twilio_error(400, 21201, "No 'To' number is specified")
        if not from_:
            return twilio_error(400, 21213, "No 'From' number is specified")
        if not any(_single(params, key) for key in ("Url", "Twiml", "ApplicationSid")):
            return twilio_error(400, 21205, "Url parameter is required. Please provide a "
                                            "Url, Twiml or ApplicationSid.")
        requested = params.get("StatusCallbackEvent", [])
        events = frozenset(
            event.lower() for value in requested for event in str(value).split()
        ) if requested else frozenset({"completed"})
        call = SimulatedCall(sid=new_call_sid(), params=params, to=to, from_=from_,
                             events=events)
        self.calls[call.sid] = call
        call.task = asyncio.create_task(self._run_call(call), name=f"api-call-{call.sid}")
        return JSONResponse(self._resource(call), status_code=201)

    def _list(self, request: Request) -> Response:
        filters = {key: request.query_params[name] for key, name in
                   (("status", "Status"), ("to", "To"), ("from", "From"))
                   if name in request.query_params}
        resources = [self._resource(call) for call in reversed(self.calls.values())]
        resources = [r for r in resources if all(r[k] == v for k, v in filters.items())]
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Calls.json"
        page_size = int(request.query_params.get("PageSize", "50"))
        return JSONResponse({
            "calls": resources[:page_size], "end": min(len(resources), page_size) - 1,
            "first_page_uri": f"{uri}?PageSize={page_size}&Page=0", "next_page_uri": None,
            "page": 0, "page_size": page_size, "previous_page_uri": None, "start": 0,
            "uri": f"{uri}?PageSize={page_size}&Page=0",
        })

    async def _fetch_or_update(self, request: Request) -> Response:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        call_sid = request.path_params["call_sid"]
        if request.method == "GET":
            call = self.calls.get(call_sid)
            return self._not_found(request) if call is None else JSONResponse(
                self._resource(call))
        update = CallUpdate(self.clock.now(), call_sid, _form(await request.body()))
        self.updates.append(update)
        call = self.calls.get(call_sid)
        response = (self._not_found(request) if call is None
                    else self._update(call, update.params))
        update.http_status = response.status_code
        return response

    @staticmethod
    def _not_found(request: Request) -> Response:
        return twilio_error(404, 20404, f"The requested resource {request.url.path} was "
                                        "not found")

    def _update(self, call: SimulatedCall, params: Mapping[str, str | list[str]]) -> Response:
        """Apply a Status / Url / Twiml update as Twilio would (Status first)."""
        _refresh_inbound(call, self.clock)
        ended = (call.done.is_set() or call.hangup_requested.is_set()
                 or (call.phone_call is not None and call.phone_call.done()))
        status = _single(params, "Status")
        url, twiml = _single(params, "Url"), _single(params, "Twiml")
        if status == "completed" or (status == "canceled"
                                     and call.status in ("queued", "ringing")):
            if not ended:  # completed ends any live call; canceled only one not answered
                self._end(call)
        elif url or twiml:
            if ended or call.status != "in-progress" or call.phone_call is None:
                return twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
            call.phone_call.redirect(twiml=twiml or None, url=url or None,
                                     method=_single(params, "Method") or "POST")
        call.date_updated = rfc2822_now()
        return JSONResponse(self._resource(call))

    @staticmethod
    def _end(call: SimulatedCall) -> None:
        call.hangup_requested.set()
        if call.phone_call is not None:
            call.phone_call.complete()

    def _resource(self, call: SimulatedCall) -> dict[str, Any]:
        _refresh_inbound(call, self.clock)
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call.sid}"
        return {
            "account_sid": self.account_sid, "annotation": None,
            "answered_by": call.answered_by, "api_version": API_VERSION, "caller_name": None,
            "date_created": call.date_created, "date_updated": call.date_updated,
            "direction": call.direction, "duration": call.duration,
            "end_time": call.end_time, "forwarded_from": None, "from": call.from_,
            "from_formatted": call.from_, "group_sid": None, "parent_call_sid": None,
            "phone_number_sid": None, "price": None, "price_unit": "USD", "queue_time": "0",
            "sid": call.sid, "start_time": call.start_time, "status": call.status,
            "subresource_uris": {
                name: f"{uri}/{name.title().replace('_', '')}.json"
                for name in ("notifications", "recordings", "payments", "events", "siprec",
                             "streams", "transcriptions")
            },
            "to": call.to, "to_formatted": call.to, "trunk_sid": None, "uri": f"{uri}.json",
        }

    # -- inbound calls from an attached phone ---------------------------------------------
    def _adopt(self, phone_call: PhoneCall) -> None:
        """A call an attached phone just started: known here from now on."""
        result = phone_call.result
        call = SimulatedCall(sid=phone_call.call_sid, params={}, to=result.to_number,
                             from_=result.from_number, events=frozenset(),
                             direction=result.direction, placed_by_phone=True,
                             status="ringing", phone_call=phone_call)
        self.calls[call.sid] = call
        call.task = asyncio.create_task(self._follow(call), name=f"api-inbound-{call.sid}")

    async def _follow(self, call: SimulatedCall) -> None:
        """The phone drives an inbound call; the resource mirrors it until it ends."""
        assert call.phone_call is not None
        try:
            result = await call.phone_call.wait()
        finally:
            _refresh_inbound(call, self.clock)
            _finish(call, "completed", self.clock)
        result.final_status = call.status
        self.results[call.sid] = result
        call.done.set()

    # -- a call's life -------------------------------------------------------------------
    async def _run_call(self, call: SimulatedCall) -> None:
        sender = asyncio.create_task(self._send_callbacks(call),
                                     name=f"api-callbacks-{call.sid}")
        result: PhoneCallResult | None = None
        try:
            result = await self._live(call)
        except Exception:  # the simulator's own bug: end the call, keep serving
            log.exception("simulated outbound call %s failed", call.sid)
            _finish(call, "failed", self.clock)
        finally:
            if result is None:
                result = PhoneCallResult(call_sid=call.sid, account_sid=self.account_sid,
                                         direction="outbound-api", from_number=call.from_,
                                         to_number=call.to, ended_at=self.clock.now())
            result.final_status = call.status
            self._callback(call, "completed")
            call.callbacks.put_nowait(None)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(sender, timeout=20)
            result.status_callbacks = [r for r in self.callbacks if r.call_sid == call.sid]
            self.results[call.sid] = result
            call.done.set()

    async def _live(self, call: SimulatedCall) -> PhoneCallResult | None:
        """Ring, then answer (running the phone) or not. None when nobody answered."""
        self._callback(call, "initiated")
        call.status = "ringing"
        call.date_updated = rfc2822_now()
        self._callback(call, "ringing")
        await self.clock.wait(call.hangup_requested, self.ring_ms / 1000)
        if call.hangup_requested.is_set():
            _finish(call, "canceled", self.clock)
            return None
        outcome = self.outcomes.get(call.to)
        if outcome is not None:
            _finish(call, outcome, self.clock)
            return None
        call.status = "in-progress"
        call.start_time = call.date_updated = rfc2822_now()
        call.answered_at = self.clock.now()
        self._callback(call, "answered")
        extra: dict[str, str] = {}
        amd = call.param("MachineDetection")
        async_amd = call.param("AsyncAmd").lower() == "true"
        if amd:
            verdict = call.amd_verdict = _verdict(amd, self.answered_by.get(call.to, "human"))
            if not async_amd:  # synchronous: decided before the Url fetch, sent with it
                call.answered_by = extra["AnsweredBy"] = verdict
        assert self._phone is not None
        url = call.param("Url")
        application_sid = call.param("ApplicationSid")
        if not url and not call.param("Twiml") and application_sid:
            url = self.application_urls.get(application_sid, "")
        phone_call = self._phone.start_call(
            to=call.to, from_=call.from_,
            script=self.callee_scripts.get(call.to) or CallScript.default_callee(),
            direction="outbound-api", call_sid=call.sid, webhook_url=url or None,
            webhook_method=call.param("Method", "POST") or "POST",
            twiml=None if url else (call.param("Twiml") or "<Response/>"),
            call_status="in-progress", extra_params=extra)
        call.phone_call = phone_call
        if not url and not call.param("Twiml"):
            phone_call.result.warnings.append(
                f"ApplicationSid {application_sid} has no voice URL in application_urls")
        amd_task = (asyncio.create_task(self._async_amd(call, phone_call))
                    if amd and async_amd else None)
        try:
            result = await phone_call.wait()
        finally:
            if amd_task is not None:
                amd_task.cancel()
                await asyncio.gather(amd_task, return_exceptions=True)
        _finish(call, "completed", self.clock)
        return result

    async def _async_amd(self, call: SimulatedCall, phone_call: PhoneCall) -> None:
        """AsyncAmd=true: decide (see `_detect`), then POST to AsyncAmdStatusCallback."""
        answered_by, duration_ms = await self._detect(call, phone_call)
        call.answered_by = answered_by
        url = call.param("AsyncAmdStatusCallback")
        if not url:
            return
        params = {"AccountSid": self.account_sid, "AnsweredBy": answered_by,
                  "CallSid": call.sid, "MachineDetectionDuration": str(duration_ms)}
        result = phone_call.result
        result.amd_callback_at = self.clock.now()
        result.amd_answered_by = answered_by
        result.amd_detection_ms = duration_ms
        assert self._http is not None
        try:
            await send_twilio_request(
                self._http, url, params, auth_token=self.auth_token,
                method=call.param("AsyncAmdStatusCallbackMethod", "POST") or "POST",
                connect_to=self.server_url_for_phone)
        except httpx.HTTPError as exc:
            log.info("async AMD callback for %s failed: %s", call.sid, exc)

    async def _detect(self, call: SimulatedCall, phone_call: PhoneCall) -> tuple[str, int]:
        """(AnsweredBy, MachineDetectionDuration ms), decided when Twilio would decide.

        DetectMessageEnd on a machine waits for the end of its greeting, i.e. its beep;
        every other verdict comes `amd_ms` after the answer.
        """
        verdict = call.amd_verdict or "unknown"
        if (call.param("MachineDetection").lower() != "detectmessageend"
                or verdict not in MESSAGE_END_VERDICTS):
            await self.clock.sleep(self.amd_ms / 1000)
            return verdict, self.amd_ms
        timeout_s = _seconds(call.param("MachineDetectionTimeout"),
                             DEFAULT_MACHINE_DETECTION_TIMEOUT_S)
        try:
            async with asyncio.timeout(self.clock.wall_s(timeout_s)):
                beep_ended_at = await phone_call.wait_beep_ended()
        except TimeoutError:
            return "unknown", round(timeout_s * 1000)
        answered_at = call.answered_at if call.answered_at is not None else beep_ended_at
        return verdict, max(0, round((beep_ended_at - answered_at) * 1000))

    def _callback(self, call: SimulatedCall, event: str) -> None:
        """Queue the status callback for `event` if it was requested (sent in order)."""
        url = call.param("StatusCallback")
        if not url or event not in call.events:
            return
        call_status = {"initiated": "initiated", "ringing": "ringing",
                       "answered": "in-progress"}.get(event, call.status)
        params = {
            "AccountSid": self.account_sid, "ApiVersion": API_VERSION,
            "CallSid": call.sid, "CallStatus": call_status, "Called": call.to,
            "Caller": call.from_, "Direction": call.direction, "From": call.from_,
            "To": call.to, "CallbackSource": "call-progress-events",
            "SequenceNumber": str(call.sequence), "Timestamp": rfc2822_now(),
        }
        if event == "completed":
            params["CallDuration"] = call.duration or "0"
        if call.answered_by is not None:
            params["AnsweredBy"] = call.answered_by
        call.sequence += 1
        call.callbacks.put_nowait((event, params))

    async def _send_callbacks(self, call: SimulatedCall) -> None:
        assert self._http is not None
        url = call.param("StatusCallback")
        method = call.param("StatusCallbackMethod", "POST") or "POST"
        while (item := await call.callbacks.get()) is not None:
            event, params = item
            record = CallbackRecord(
                at=self.clock.now(), call_sid=call.sid, event=event,
                call_status=params["CallStatus"],
                sequence_number=int(params["SequenceNumber"]), url=url)
            try:
                response = await send_twilio_request(
                    self._http, url, params, auth_token=self.auth_token, method=method,
                    connect_to=self.server_url_for_phone)
                record.http_status = response.status_code
            except httpx.HTTPError as exc:
                record.error = f"{type(exc).__name__}: {exc}"
            self.callbacks.append(record)


def _finish(call: SimulatedCall, status: str, clock: SimClock) -> None:
    call.status = status
    call.end_time = call.date_updated = rfc2822_now()
    if call.answered_at is not None:
        call.duration = str(math.ceil(clock.now() - call.answered_at))
    else:
        call.duration = "0"


def _refresh_inbound(call: SimulatedCall, clock: SimClock) -> None:
    """A phone's own call is `ringing` until its TwiML runs, then `in-progress`."""
    phone_call = call.phone_call
    if not call.placed_by_phone or call.status != "ringing" or phone_call is None:
        return
    if phone_call.in_progress or (phone_call.done() and phone_call.result.verbs):
        call.status = "in-progress"
        call.answered_at = phone_call.result.twiml_received_at or clock.now()
        call.start_time = call.date_updated = _rfc2822_at(call.answered_at, clock)


def _rfc2822_at(at: float, clock: SimClock) -> str:
    """A time on `clock` as Twilio writes timestamps (whole seconds, UTC)."""
    wall = datetime.datetime.now(datetime.UTC) - datetime.timedelta(
        seconds=clock.wall_s(clock.now() - at))
    return email.utils.format_datetime(wall.replace(microsecond=0))


def _verdict(mode: str, configured: str) -> str:
    """What AMD in `mode` reports for a callee whose verdict is `configured`."""
    if mode.lower() == "enable" and configured in MESSAGE_END_VERDICTS:
        return "machine_start"  # Enable stops at "a machine answered"
    return configured


def _seconds(value: str, default: float) -> float:
    try:
        return float(value) if value else default
    except ValueError:
        return default


def _form(body: bytes) -> dict[str, str | list[str]]:
    """Form fields; the repeatable ones (StatusCallbackEvent…) always as lists."""
    params: dict[str, str | list[str]] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        if key in _REPEATABLE:
            existing = params.setdefault(key, [])
            assert isinstance(existing, list)
            existing.append(value)
        else:
            params[key] = value
    return params


def _single(params: Mapping[str, str | list[str]], key: str) -> str:
    value = params.get(key, "")
    return value[-1] if isinstance(value, list) else value
