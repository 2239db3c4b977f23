"""The registry's contract, shared by the in-process and the Redis implementation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from hotline.plan import CallPlan

# (call_sid, name, value): a signal for a call, heard by every instance.
SignalListener = Callable[[str, str, str], None]


class CallRegistry(Protocol):
    @property
    def shared(self) -> bool:
        """Plans and signals reach every instance now (False: this instance's only)."""

    async def put(self, plan: CallPlan, ttl_s: float) -> bool:
        """Keep a plan for its stream, by CallSid, for at most ttl_s. True if every
        instance can claim it; False if only this one can (its stream must come here)."""

    async def claim(self, call_sid: str, token: str) -> CallPlan:
        """Hand the plan to its stream, once. Raises InvalidStreamToken (wrong or reused
        token) or CallPlanNotFound (expired, or never registered here)."""

    async def discard(self, call_sid: str) -> None:
        """Forget a call's plan (the call ended before its stream opened)."""

    async def put_pending(self, pending_id: str, plan: CallPlan, ttl_s: float) -> None:
        """Keep an outbound plan, prebuilt when the call was placed, until it is answered."""

    async def take_pending(self, pending_id: str) -> CallPlan | None:
        """Take an outbound plan (once); None if unknown or expired."""

    async def count(self) -> int:
        """Plans waiting (pending ones included): a leak shows here."""

    async def signal(self, call_sid: str, name: str, value: str, ttl_s: float) -> None:
        """Tell a call something from outside its stream (an answering-machine verdict
        posted to any instance): every instance's listeners hear it now, and it is kept
        `ttl_s` for a stream that has not started yet (`take_signal`)."""

    async def publish(self, call_sid: str, name: str, value: str) -> None:
        """Tell every instance's listeners something now (not kept for later). Redis's
        raises RegistryUnavailable; the fallback registry logs and goes on instead."""

    async def take_signal(self, call_sid: str, name: str) -> str | None:
        """A signal kept for this call (once); None if there is none."""

    async def listen(self, listener: SignalListener) -> None:
        """Hear every signal from now on (returns once listening)."""

    async def close(self) -> None: ...
