"""The shared registry with a way out: Redis while it answers, this instance's own memory
while it does not, so that calls keep flowing when Redis is down.

While Redis is down (its signal channel is not subscribed), plans and signals stay in
memory here, and the voice webhook points the media stream at this instance (the plan is
nowhere else). What needs Redis degrades: a stream landing on another instance finds no
plan, a signal posted to another instance does not reach this one, config changes arrive
by polling only. The subscriber retries every second; once it is back, new calls use Redis
again (the instance rejoins), and plans already in memory are still found here.
"""

from __future__ import annotations

import contextlib
import logging

import redis.asyncio as aioredis

from hotline.errors import CallPlanNotFound, RegistryUnavailable
from hotline.plan import CallPlan
from hotline.registry.base import SignalListener
from hotline.registry.memory import MemoryCallRegistry
from hotline.registry.redis import RedisCallRegistry

log = logging.getLogger("hotline.registry")
_DOWN = (RegistryUnavailable, aioredis.RedisError, OSError)


class FallbackCallRegistry:
    def __init__(self, shared: RedisCallRegistry,
                 local: MemoryCallRegistry | None = None) -> None:
        self._shared = shared
        self._local = local or MemoryCallRegistry()
        self.fallbacks = 0  # operations that Redis failed and memory took

    @property
    def shared(self) -> bool:
        """Redis answers (its signal channel is subscribed): plans are fleet-wide."""
        return self._shared.connected

    def _fell_back(self, what: str, exc: BaseException) -> None:
        self.fallbacks += 1
        log.warning("Redis unavailable for %s (%s): kept in this instance's memory", what,
                    exc)

    async def put(self, plan: CallPlan, ttl_s: float) -> bool:
        if self.shared:
            try:
                return await self._shared.put(plan, ttl_s)
            except _DOWN as exc:
                self._fell_back("a call plan", exc)
        return await self._local.put(plan, ttl_s)

    async def claim(self, call_sid: str, token: str) -> CallPlan:
        if self._local.holds(call_sid):
            return await self._local.claim(call_sid, token)
        try:
            return await self._shared.claim(call_sid, token)
        except RegistryUnavailable:
            # Not here, and Redis cannot say: the plan was made by another instance.
            raise
        except CallPlanNotFound:
            return await self._local.claim(call_sid, token)  # reused token or expired here

    async def discard(self, call_sid: str) -> None:
        await self._local.discard(call_sid)
        with contextlib.suppress(*_DOWN):  # it expires there
            await self._shared.discard(call_sid)

    async def put_pending(self, pending_id: str, plan: CallPlan, ttl_s: float) -> None:
        if self.shared:
            try:
                await self._shared.put_pending(pending_id, plan, ttl_s)
                return
            except _DOWN as exc:
                self._fell_back("an outbound plan", exc)
        await self._local.put_pending(pending_id, plan, ttl_s)

    async def take_pending(self, pending_id: str) -> CallPlan | None:
        plan = await self._local.take_pending(pending_id)
        if plan is not None:
            return plan
        try:
            return await self._shared.take_pending(pending_id)
        except _DOWN as exc:
            log.warning("outbound plan %s unreadable: Redis unavailable (%s)", pending_id, exc)
            return None

    async def count(self) -> int:
        local = await self._local.count()
        try:
            return local + await self._shared.count()
        except _DOWN:
            return local

    async def signal(self, call_sid: str, name: str, value: str, ttl_s: float) -> None:
        if self.shared:
            try:
                await self._shared.signal(call_sid, name, value, ttl_s)
                return
            except _DOWN as exc:
                self._fell_back(f"a {name} signal", exc)
        await self._local.signal(call_sid, name, value, ttl_s)  # this instance's calls only

    async def publish(self, call_sid: str, name: str, value: str) -> None:
        if not self.shared:
            return  # nobody else to tell while Redis is down
        try:
            await self._shared.publish(call_sid, name, value)
        except _DOWN as exc:
            self._fell_back(f"a {name} announcement", exc)

    async def take_signal(self, call_sid: str, name: str) -> str | None:
        value = await self._local.take_signal(call_sid, name)
        if value is not None or not self.shared:
            return value
        return await self._shared.take_signal(call_sid, name)

    async def listen(self, listener: SignalListener) -> None:
        await self._local.listen(listener)
        try:
            await self._shared.listen(listener)
        except RegistryUnavailable as exc:
            log.error("Redis unavailable at start (%s): serving with this instance's own "
                      "registry until it answers", exc)

    async def close(self) -> None:
        await self._shared.close()
        await self._local.close()
