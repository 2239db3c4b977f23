"""Who is calling the API: the admin (HOTLINE_API_TOKEN, every business) or one business
(an API key from `hotline keys create`, its own business only).

With no HOTLINE_API_TOKEN set, a request without an Authorization header is the admin (the
documented local-development mode); any Authorization header is always checked. Failed
attempts are counted per client address: past `MAX_FAILURES` within `WINDOW_S`, the address
gets 429 with Retry-After, whatever it presents, until its oldest failure ages out. Neither
the presented key nor any secret is ever logged or echoed.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Header, HTTPException, Request

from hotline.keys import key_matches, key_prefix
from hotline.services import Services

log = logging.getLogger(__name__)

MAX_FAILURES = 10
WINDOW_S = 60.0
# Past this many addresses, failed() forgets those whose failures all aged out: an address
# that never comes back would otherwise stay in the table for ever.
SWEEP_ABOVE = 4096
UNAUTHORIZED = "missing or wrong bearer token"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of the API: `business` is None for the admin, who sees every business."""

    business: str | None = None

    def may_see(self, business_slug: str | None) -> bool:
        return self.business is None or self.business == business_slug


ADMIN = Principal()


class FailureLimiter:
    """A sliding window of failed attempts per client address."""

    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic,
                 sweep_above: int = SWEEP_ABOVE) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._sweep_above = self._min_sweep = sweep_above

    def retry_after(self, address: str) -> int | None:
        """Seconds until the address may try again, or None when it may now."""
        failures = self._recent(address)
        if len(failures) < self.max_failures:
            return None
        return max(1, math.ceil(failures[0] + self.window_s - self._clock()))

    def failed(self, address: str) -> None:
        self._failures.setdefault(address, deque()).append(self._clock())
        if len(self._failures) > self._sweep_above:
            for other in list(self._failures):
                self._recent(other)
            # Many addresses failing at once: sweep again only once their number doubles.
            self._sweep_above = max(self._min_sweep, 2 * len(self._failures))

    def addresses(self) -> int:
        """How many addresses are remembered."""
        return len(self._failures)

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures.get(address)
        if failures is None:
            return deque()
        cutoff = self._clock() - self.window_s
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:
            del self._failures[address]  # forget quiet addresses: the table stays small
        return failures


def failure_limiter(request: Request) -> FailureLimiter:
    limiter: FailureLimiter | None = getattr(request.app.state, "auth_failures", None)
    if limiter is None:
        limiter = request.app.state.auth_failures = FailureLimiter()
    return limiter


async def principal(request: Request,
                    authorization: Annotated[str | None, Header()] = None) -> Principal:
    services: Services = request.app.state.services
    settings = services.settings
    if authorization is None and settings.api_token is None:
        return ADMIN
    address = request.client.host if request.client else "unknown"
    limiter = failure_limiter(request)
    wait = limiter.retry_after(address)
    if wait is not None:
        raise HTTPException(status_code=429, detail="too many failed attempts; retry later",
                            headers={"Retry-After": str(wait)})
    found = await _resolve(services, authorization)
    if found is not None:
        return found
    limiter.failed(address)
    log.warning("API authentication failed from %s (%s %s)", address, request.method,
                request.url.path)
    raise HTTPException(status_code=401, detail=UNAUTHORIZED,
                        headers={"WWW-Authenticate": "Bearer"})


async def _resolve(services: Services, authorization: str | None) -> Principal | None:
    if authorization is None or not authorization.startswith("Bearer "):
        return None
    presented = authorization.removeprefix("Bearer ")
    admin_token = services.settings.api_token
    if admin_token is not None and hmac.compare_digest(
            presented.encode(), admin_token.get_secret_value().encode()):
        return ADMIN
    secret = services.settings.key_secret
    prefix = key_prefix(presented)
    if secret is None or prefix is None:
        return None
    stored = await services.store.find_api_key(prefix)
    if stored is None or stored.revoked_at is not None:
        return None
    if not key_matches(secret.get_secret_value(), presented, stored.key_hash):
        return None
    return Principal(business=stored.business_slug)


async def principal_of_key(services: Services, key: str) -> Principal | None:
    """Who a key presented outside a header stands for (the dashboard's sign-in form): the
    admin token or a live business key; None for anything else. Constant-time, as above."""
    return await _resolve(services, f"Bearer {key}")
