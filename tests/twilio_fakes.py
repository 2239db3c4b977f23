"""What a fake Twilio-facing product (in the simulator tests) keeps of each request."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request
from twilio.request_validator import RequestValidator


@dataclass
class Seen:
    at: float
    url: str
    params: dict[str, str]
    signature_valid: bool


async def seen_request(request: Request, validator: RequestValidator) -> Seen:
    """The request as Twilio sent it, and whether its X-Twilio-Signature holds."""
    params = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
    url = str(request.url)
    return Seen(time.monotonic(), url, params, validator.validate(
        url, params, request.headers.get("x-twilio-signature", "")))
