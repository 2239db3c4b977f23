"""The HTTP requests one simulated call makes to the server, as Twilio makes them.

The voice webhook, the TwiML fetched for an update or a `<Redirect>`, and the `completed`
status callback: each signed (`twilio_requests`), each recorded in the call's
`PhoneCallResult`. A failed fetch is an "application error" (11200), reported through
`on_error`, never raised.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import httpx

from hotline.sim.call_result import CallbackRecord, PhoneCallResult
from hotline.sim.clock import SimClock
from hotline.sim.twilio_requests import API_VERSION, rfc2822_now, send_twilio_request

HTTP_RETRIEVAL_FAILURE = 11200  # https://www.twilio.com/docs/api/errors/11200


class CallWebhooks:
    def __init__(self, result: PhoneCallResult, *, auth_token: str, connect_to: str | None,
                 forge: bool, extra_params: dict[str, str],
                 on_error: Callable[[int, str], None], clock: SimClock) -> None:
        self._result = result
        self._auth_token = auth_token
        self._connect_to = connect_to
        self._forge = forge
        self._extra_params = extra_params
        self._on_error = on_error
        self._clock = clock

    async def fetch_twiml(self, http: httpx.AsyncClient, call_status: str) -> str | None:
        """The voice webhook's TwiML; None (application error) if there is none."""
        result = self._result
        assert result.webhook_url is not None
        params = self.call_params(call_status)
        result.webhook_params = params
        result.webhook_sent_at = self._clock.now()
        try:
            response = await self._request_twiml(http, result.webhook_url,
                                                 result.webhook_method, params)
        except httpx.HTTPError as exc:
            self._on_error(HTTP_RETRIEVAL_FAILURE,
                           f"webhook failed: {type(exc).__name__}: {exc}")
            return None
        result.twiml_received_at = self._clock.now()
        result.webhook_status = response.status_code
        result.webhook_content_type = response.headers.get("content-type")
        if not 200 <= response.status_code < 300:
            result.twiml = response.text
            self._on_error(HTTP_RETRIEVAL_FAILURE,
                           f"webhook answered HTTP {response.status_code}")
            return None
        return response.text

    async def fetch_update(self, http: httpx.AsyncClient, url: str, method: str) -> str | None:
        """TwiML from an update's or a `<Redirect>`'s URL; None (application error) if not."""
        try:
            response = await self._request_twiml(http, url, method,
                                                 self.call_params("in-progress"))
        except httpx.HTTPError as exc:
            self._on_error(HTTP_RETRIEVAL_FAILURE, f"{url} failed: {type(exc).__name__}: {exc}")
            return None
        if not 200 <= response.status_code < 300:
            self._on_error(HTTP_RETRIEVAL_FAILURE, f"{url} answered HTTP {response.status_code}")
            return None
        return response.text

    async def send_completed_callback(self, http: httpx.AsyncClient, url: str,
                                      method: str) -> None:
        result = self._result
        params = self.call_params("completed")
        params.update({
            "CallDuration": str(math.ceil(result.duration_s)),
            "CallbackSource": "call-progress-events",
            "SequenceNumber": "0",
            "Timestamp": rfc2822_now(),
        })
        record = CallbackRecord(at=self._clock.now(), call_sid=result.call_sid,
                                event="completed", call_status="completed", sequence_number=0,
                                url=url)
        try:
            response = await send_twilio_request(
                http, url, params, auth_token=self._auth_token, method=method,
                connect_to=self._connect_to)
            record.http_status = response.status_code
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        result.status_callbacks.append(record)

    def call_params(self, call_status: str) -> dict[str, str]:
        result = self._result
        params = {
            "AccountSid": result.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": result.call_sid,
            "CallStatus": call_status,
            "Called": result.to_number,
            "Caller": result.from_number,
            "Direction": result.direction,
            "From": result.from_number,
            "To": result.to_number,
        }
        params.update(self._extra_params)
        return params

    async def _request_twiml(self, http: httpx.AsyncClient, url: str, method: str,
                             params: dict[str, str]) -> httpx.Response:
        return await send_twilio_request(
            http, url, params, auth_token=self._auth_token, method=method,
            connect_to=self._connect_to, forge=self._forge)
