"""Simulated time: the monotonic clock, run `speed` times faster.

The simulated phone, the simulated Twilio REST API and the simulated engine read the time
and wait through one `SimClock`; the server's call clock takes the same factor
(`HOTLINE_CLOCK_SPEED`), so a position on one side (audio played, a mark's echo, a timer)
means the same on the other. At speed 1 it is `time.monotonic()` itself; tests run calls
faster (20 ms of audio in 4 ms of wall time at speed 5).

Only call time is compressed: socket timeouts and other waits that guard against a stuck
peer stay in wall-clock seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SimClock:
    speed: float = 1.0

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"clock speed must be > 0, not {self.speed}")

    def now(self) -> float:
        """Simulated seconds (`time.monotonic()` × speed): the `*_at` times of the sims."""
        return time.monotonic() * self.speed

    def now_ms(self) -> float:
        return self.now() * 1000

    def wall_s(self, seconds: float) -> float:
        """How long `seconds` of simulated time take on the wall clock."""
        return seconds / self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        """Wait for `event` at most `seconds` of simulated time; True if it is set."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(),
                                   None if seconds is None else self.wall_s(max(0.0, seconds)))
        return event.is_set()


REAL_TIME = SimClock(1.0)
