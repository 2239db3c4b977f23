"""HTTP tool request signatures, Stripe-like, so a receiver can reject forgeries and replays.

    X-Hotline-Timestamp: <unix seconds>
    X-Hotline-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{raw body}")>

A receiver recomputes the HMAC over the raw body it got, compares in constant time, and
rejects a timestamp further than `tolerance_s` from its own clock.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Hotline-Timestamp"
SIGNATURE_HEADER = "X-Hotline-Signature"
SCHEME = "sha256="
DEFAULT_TOLERANCE_S = 300


def sign_tool_request(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Hotline-Signature` header value: ``sha256=<hex>``."""
    signed = timestamp.encode() + b"." + body
    return SCHEME + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify_tool_signature(secret: str, timestamp: str, body: bytes, header: str, *,
                          now: float, tolerance_s: float = DEFAULT_TOLERANCE_S) -> bool:
    """True when `header` signs `timestamp` + `body` with `secret` and the timestamp is
    within `tolerance_s` of `now` (unix seconds). Never raises on malformed input."""
    try:
        sent_s = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent_s) > tolerance_s:
        return False
    expected = sign_tool_request(secret, timestamp, body)
    return hmac.compare_digest(expected.encode(), header.strip().encode())
