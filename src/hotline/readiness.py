"""`/healthz` (the process serves) and `/readyz` (send it calls): what a load balancer asks.

Ready means every check below passes:
- `drain`: the instance is not draining (SIGTERM; see hotline.drain).
- `records`: a call's record will not be lost: the store answers `SELECT 1` quickly, or the
  recorder's journal keeps records on disk until it does (`CallRecorder.journal_ok`).
- `registry`: with Redis, whether it answers; `degraded` (still ready) while it does not.
- `greetings`: every inbound greeting is rendered and in memory, so the first calls get the
  cached greeting and not a live one; after `HOTLINE_READY_GREETINGS_WAIT_S` from the start
  the instance is ready anyway (the check is then `waived`, and says what is missing).
The store is asked at most once per `STORE_CHECK_TTL_S`, whatever the polling rate.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from hotline.errors import HotlineError

if TYPE_CHECKING:
    from hotline.services import Services

log = logging.getLogger("hotline.readiness")

STORE_CHECK_TIMEOUT_S = 1.0
STORE_CHECK_TTL_S = 2.0


class CheckState(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WAIVED = "waived"  # not met, but waited for as long as the settings say: ready anyway
    DEGRADED = "degraded"  # ready, with a part missing (said in the detail)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    state: CheckState
    detail: str

    @property
    def ok(self) -> bool:
        return self.state is not CheckState.FAIL


def drain_check(draining: bool, detail: str) -> Check:
    return Check("drain", CheckState.FAIL if draining else CheckState.PASS, detail)


def records_check(store_ok: bool, store_detail: str, journal: Path | None,
                  journal_ok: bool) -> Check:
    """Records are safe when the store takes them, or when the recorder's journal keeps
    them on disk until it does (`journal_ok`: its last append, or its opening, worked)."""
    if store_ok:
        return Check("records", CheckState.PASS, f"store: {store_detail}")
    if journal is not None and journal_ok:
        return Check("records", CheckState.PASS,
                     f"store: {store_detail}; records kept in the journal {journal} meanwhile")
    return Check("records", CheckState.FAIL,
                 f"store: {store_detail}; and the journal {journal or '(none)'} is not working")


def greetings_check(missing: list[str], total: int, waited_s: float,
                    wait_s: float) -> Check:
    """`missing`: the businesses whose inbound greeting is not in memory yet."""
    if not missing:
        return Check("greetings", CheckState.PASS, f"{total} inbound greetings cached")
    names = ", ".join(missing[:5]) + (", …" if len(missing) > 5 else "")
    if waited_s >= wait_s:
        return Check("greetings", CheckState.WAIVED,
                     f"{len(missing)} of {total} still not cached after {wait_s:.0f} s "
                     f"({names}): ready anyway, those calls greet live")
    return Check("greetings", CheckState.FAIL,
                 f"{len(missing)} of {total} rendering ({names}); waited {waited_s:.1f} s "
                 f"of {wait_s:.0f} s")


def registry_check(configured: bool, shared: bool) -> Check:
    """Redis down does not stop calls (plans stay in this instance's memory, their streams
    come here): ready, but degraded, and said."""
    if not configured:
        return Check("registry", CheckState.PASS, "in-process (one instance)")
    if shared:
        return Check("registry", CheckState.PASS, "redis: reachable")
    return Check("registry", CheckState.DEGRADED,
                 "redis: unreachable; calls are served by this instance alone (plans in its "
                 "memory, streams pinned here); signals and config changes from other "
                 "instances do not reach it until Redis is back")


class StoreProbe:
    """`SELECT 1` with a short timeout, its answer kept for `ttl_s`; one probe at a time."""

    def __init__(self, check: Callable[[], Awaitable[None]], *,
                 timeout_s: float = STORE_CHECK_TIMEOUT_S, ttl_s: float = STORE_CHECK_TTL_S,
                 ) -> None:
        self._check = check
        self._timeout_s = timeout_s
        self._ttl_s = ttl_s
        self._lock = asyncio.Lock()
        self._answer: tuple[float, bool, str] | None = None  # (when, ok, detail)
        self.probes = 0

    async def __call__(self) -> tuple[bool, str]:
        async with self._lock:
            if self._answer is None or time.monotonic() - self._answer[0] >= self._ttl_s:
                ok, detail = await self._probe()
                self._answer = (time.monotonic(), ok, detail)
            _, ok, detail = self._answer
            return ok, detail

    async def _probe(self) -> tuple[bool, str]:
        self.probes += 1
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._check()
        except TimeoutError:
            return False, f"no answer within {self._timeout_s:.1f} s"
        except HotlineError as exc:
            return False, str(exc)
        except Exception as exc:  # a probe's top level: anything else is "not reachable" too
            return False, type(exc).__name__
        return True, "reachable"


class Readiness:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._started = time.monotonic()
        self._store = StoreProbe(services.store.check)
        self._waiver_logged = False

    async def checks(self) -> list[Check]:
        services = self._services
        store_ok, store_detail = await self._store()
        recorder = services.recorder
        checks = [drain_check(services.drain.draining, services.drain.describe()),
                  records_check(store_ok, store_detail, recorder.journal_path,
                                recorder.journal_ok),
                  self._greetings(),
                  registry_check(services.settings.redis_url is not None,
                                 services.registry.shared)]
        for check in checks:
            if check.state is CheckState.WAIVED and not self._waiver_logged:
                self._waiver_logged = True
                log.warning("ready without every greeting: %s", check.detail)
        return checks

    def _greetings(self) -> Check:
        services = self._services
        if not services.settings.greeting_cache:
            return Check("greetings", CheckState.PASS, "greeting cache off: calls greet live")
        businesses = [b for b in services.config.businesses() if b.greeting]
        cache = services.greetings
        missing = [b.slug for b in businesses if not cache.has(cache.key(b.greeting, b.voice))]
        return greetings_check(missing, len(businesses), time.monotonic() - self._started,
                               services.settings.ready_greetings_wait_s)


router = APIRouter()


@router.get("/healthz", response_class=PlainTextResponse)
async def healthz() -> str:
    """Alive: the process serves requests (draining or not)."""
    return "ok"


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    checks = await services.readiness.checks()
    ready = all(check.ok for check in checks)
    body = {"ready": ready,
            "checks": {c.name: {"state": c.state.value, "detail": c.detail} for c in checks}}
    return JSONResponse(body, status_code=200 if ready else 503)
