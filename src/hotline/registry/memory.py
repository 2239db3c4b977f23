"""In-process registry: a dict with expiries. The default for a single instance."""

from __future__ import annotations

import hmac
import time

from hotline.errors import CallPlanNotFound, InvalidStreamToken
from hotline.plan import CallPlan
from hotline.registry.base import SignalListener

CLAIMED_MEMORY_S = 600.0
SWEEP_EVERY_S = 10.0  # how long a used token is remembered, to name reuse as such


class MemoryCallRegistry:
    def __init__(self) -> None:
        self._plans: dict[str, tuple[float, CallPlan]] = {}
        self._pending: dict[str, tuple[float, CallPlan]] = {}
        self._claimed: dict[str, float] = {}
        self._signals: dict[tuple[str, str], tuple[float, str]] = {}
        self._listeners: list[SignalListener] = []
        self._next_sweep = 0.0

    def _sweep(self, now: float) -> None:
        for table in (self._plans, self._pending):
            for key in [k for k, (expiry, _) in table.items() if expiry <= now]:
                del table[key]
        for signal in [k for k, (expiry, _) in self._signals.items() if expiry <= now]:
            del self._signals[signal]
        for key in [k for k, expiry in self._claimed.items() if expiry <= now]:
            del self._claimed[key]

    @property
    def shared(self) -> bool:
        return False

    def holds(self, call_sid: str) -> bool:
        """A plan for this call waits here, or was claimed here."""
        return call_sid in self._plans or call_sid in self._claimed

    async def put(self, plan: CallPlan, ttl_s: float) -> bool:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
            self._next_sweep = now + SWEEP_EVERY_S
        self._plans[plan.call_sid] = (now + ttl_s, plan)
        return False

    async def claim(self, call_sid: str, token: str) -> CallPlan:
        now = time.monotonic()
        entry = self._plans.get(call_sid)
        if entry is None or entry[0] <= now:
            self._plans.pop(call_sid, None)
            if call_sid in self._claimed:
                raise InvalidStreamToken(f"stream token for {call_sid} was already used")
            raise CallPlanNotFound(f"no call plan for {call_sid} (expired or unknown)")
        plan = entry[1]
        if not hmac.compare_digest(plan.token.encode(), token.encode()):
            raise InvalidStreamToken(f"wrong stream token for {call_sid}")
        del self._plans[call_sid]
        self._claimed[call_sid] = now + CLAIMED_MEMORY_S
        return plan

    async def discard(self, call_sid: str) -> None:
        self._plans.pop(call_sid, None)

    async def put_pending(self, pending_id: str, plan: CallPlan, ttl_s: float) -> None:
        self._pending[pending_id] = (time.monotonic() + ttl_s, plan)

    async def take_pending(self, pending_id: str) -> CallPlan | None:
        entry = self._pending.pop(pending_id, None)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    async def count(self) -> int:
        self._sweep(time.monotonic())
        return len(self._plans) + len(self._pending)

    async def signal(self, call_sid: str, name: str, value: str, ttl_s: float) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
            self._next_sweep = now + SWEEP_EVERY_S
        self._signals[(call_sid, name)] = (now + ttl_s, value)
        for listener in self._listeners:
            listener(call_sid, name, value)

    async def publish(self, call_sid: str, name: str, value: str) -> None:
        for listener in self._listeners:
            listener(call_sid, name, value)

    async def take_signal(self, call_sid: str, name: str) -> str | None:
        entry = self._signals.pop((call_sid, name), None)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    async def listen(self, listener: SignalListener) -> None:
        self._listeners.append(listener)

    async def close(self) -> None:
        self._plans.clear()
        self._pending.clear()
        self._signals.clear()
        self._listeners.clear()
