"""Requests as Twilio makes them: signed webhooks and callbacks, and the ids they carry.

`X-Twilio-Signature` is the twilio SDK's `RequestValidator.compute_signature` over the
exact URL and the sorted POST params (a GET signs the URL with its query).
"""

from __future__ import annotations

import datetime
import email.utils
import secrets
import uuid
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
WEBHOOK_TIMEOUT_S = 15.0  # Twilio waits 15 s for a webhook answer
WEBHOOK_USER_AGENT = "TwilioProxy/1.1"


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def new_stream_sid() -> str:
    return "MZ" + secrets.token_hex(16)


def rfc2822_now() -> str:
    """`Tue, 14 Oct 2025 16:07:21 +0000`, as Twilio writes timestamps."""
    return email.utils.format_datetime(datetime.datetime.now(datetime.UTC).replace(microsecond=0))


def twilio_signature(auth_token: str, url: str, params: dict[str, str] | None = None, *,
                     forge: bool = False) -> str:
    """`X-Twilio-Signature` for `url` (+ POST params); `forge` signs with a wrong token."""
    token = auth_token + "-forged" if forge else auth_token
    return str(RequestValidator(token).compute_signature(url, params or {}))


def route(url: str, connect_to: str | None) -> str:
    """Where to actually send a request for `url`: `connect_to`'s scheme and host, if given.

    Twilio signs the URL it was given even when a TLS-terminating proxy sits in front of
    the server; routing keeps that URL for signing while reaching a local address.
    """
    if connect_to is None:
        return url
    target = urlsplit(connect_to)
    parts = urlsplit(url)
    scheme = target.scheme
    if parts.scheme in ("ws", "wss"):
        scheme = {"http": "ws", "https": "wss"}.get(target.scheme, target.scheme)
    return urlunsplit((scheme, target.netloc, parts.path, parts.query, parts.fragment))


async def send_twilio_request(
    http: httpx.AsyncClient, url: str, params: dict[str, str], *, auth_token: str,
    method: str = "POST", connect_to: str | None = None, forge: bool = False,
    timeout_s: float = WEBHOOK_TIMEOUT_S,
) -> httpx.Response:
    """A webhook or status callback: form-encoded POST (GET: params in the query), signed.

    Raises `httpx.HTTPError` when the server can't be reached or doesn't answer in time.
    """
    headers = {
        "User-Agent": WEBHOOK_USER_AGENT,
        "Accept": "*/*",
        "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        "X-Home-Region": "us1",
    }
    if method.upper() == "GET":
        separator = "&" if urlsplit(url).query else "?"
        full_url = url + separator + urlencode(params) if params else url
        headers["X-Twilio-Signature"] = twilio_signature(auth_token, full_url, forge=forge)
        return await http.get(route(full_url, connect_to), headers=headers, timeout=timeout_s)
    headers["X-Twilio-Signature"] = twilio_signature(auth_token, url, params, forge=forge)
    return await http.post(route(url, connect_to), data=params, headers=headers,
                           timeout=timeout_s)
