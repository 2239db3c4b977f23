"""The registry's contract, shared by the in-process and the Redis implementation."""

from __future__ import annotations

from typing import Protocol

from hotline.plan import CallPlan


class CallRegistry(Protocol):
    async def put(self, plan: CallPlan, ttl_s: float) -> None:
        """Keep a plan for its stream, by CallSid, for at most ttl_s."""

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

    async def close(self) -> None: ...
