"""The drain: how an instance shuts down without cutting a call.

On the first SIGTERM (see `hotline.draining_server`) the instance starts draining:
`/readyz` fails at once so the load balancer stops sending calls, new calls get TwiML that
fails over (telephony/webhooks.py), new outbound calls are refused (503). Calls already
running go on to their end, up to `HOTLINE_DRAIN_TIMEOUT_S`; then each gets the goodbye
line and a hang-up (the core's `DrainDeadline`, whose goodbye cap makes sure of the
hang-up). Then the server stops, and the lifespan writes every record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hotline.core.events import DrainDeadline

if TYPE_CHECKING:
    from hotline.services import Services

log = logging.getLogger("hotline.drain")

POLL_S = 0.05  # how often the drain looks at the active calls (not on any call's path)
# A call whose TwiML went out opens its stream within a second or so; one that has not
# after this long never will (the caller hung up first), and is not waited for.
STREAM_EXPECTED_S = 10.0
MAX_EXPECTED = 1024  # past this, expired expectations are swept when a new one comes
# After the goodbye cap: the REST hang-up's round trip and the stream's stop.
HANG_UP_MARGIN_S = 5.0


class Drain:
    """Whether this instance is draining, and since when (monotonic seconds)."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.reason = ""
        # CallSid -> until when: calls answered with a stream whose socket is not open yet.
        self._expected: dict[str, float] = {}

    @property
    def draining(self) -> bool:
        return self.since is not None

    def begin(self, reason: str) -> bool:
        """Start draining (safe from a signal handler: no I/O, no await); False if it
        already was."""
        if self.since is not None:
            return False
        self.since, self.reason = time.monotonic(), reason
        return True

    def expect_stream(self, call_sid: str) -> None:
        """The voice webhook answered this call with a stream: the drain waits for it."""
        if len(self._expected) >= MAX_EXPECTED:
            self._sweep()
        self._expected[call_sid] = time.monotonic() + STREAM_EXPECTED_S

    def stream_arrived(self, call_sid: str) -> None:
        """Its stream started (it is an active call now), or the call ended without one."""
        self._expected.pop(call_sid, None)

    def streams_expected(self) -> int:
        self._sweep()
        return len(self._expected)

    def _sweep(self) -> None:
        now = time.monotonic()
        for call_sid in [sid for sid, until in self._expected.items() if until <= now]:
            del self._expected[call_sid]

    def describe(self) -> str:
        if self.since is None:
            return "serving"
        return f"draining for {time.monotonic() - self.since:.1f} s ({self.reason})"


@dataclass(frozen=True, slots=True)
class DrainResult:
    calls_at_start: int
    said_goodbye: int  # calls still running at the deadline
    left_running: int  # calls still running after their goodbye cap: the server cuts them
    seconds: float


async def drain_calls(services: Services, reason: str) -> DrainResult:
    """Drain this instance's calls (see the module docstring); returns once none is left
    running, or once those still running have had their goodbye and its cap."""
    services.drain.begin(reason)
    settings = services.settings
    started = time.monotonic()
    at_start = len(services.active_calls)
    log.warning("draining (%s): %d active calls may run for up to %.0f s; new calls fail "
                "over to %s", reason, at_start, settings.drain_timeout_s,
                settings.failover_url or "an apology and a hang-up")
    said_goodbye = 0
    if not await _calls_ended(services, settings.drain_timeout_s):
        runners = list(services.active_calls.values())
        said_goodbye = len(runners)
        log.warning("drain deadline (%.0f s) passed: %d calls get a goodbye and a hang-up",
                    settings.drain_timeout_s, said_goodbye)
        for runner in runners:
            runner.deliver(DrainDeadline())
        cap_s = settings.goodbye_cap_s / settings.clock_speed + HANG_UP_MARGIN_S
        await _calls_ended(services, cap_s)
    left = len(services.active_calls)
    if left:
        log.error("%d calls still running after their goodbye: the server closes them "
                  "(their records are kept)", left)
    result = DrainResult(at_start, said_goodbye, left, time.monotonic() - started)
    log.warning("drained in %.1f s: %d calls at the start, %d hung up at the deadline",
                result.seconds, at_start, said_goodbye)
    return result


async def _calls_ended(services: Services, timeout_s: float) -> bool:
    """Until no call runs here, nor is about to (its TwiML sent, its stream not open yet):
    True; or until `timeout_s` has passed: False."""
    deadline = time.monotonic() + timeout_s
    while services.active_calls or services.drain.streams_expected():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True
