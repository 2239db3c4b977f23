"""Both registries honour one contract: one claim per token, expiry, pending plans."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from hotline.errors import CallPlanNotFound, InvalidStreamToken, RegistryUnavailable
from hotline.registry import CallRegistry, MemoryCallRegistry
from hotline.registry.fallback import FallbackCallRegistry
from hotline.registry.redis import RedisCallRegistry
from tests.factories import make_outbound_plan, make_plan
from tests.server_process import free_port
from tests.services import reachable_redis_url

pytestmark = pytest.mark.sockets  # servers, simulators or services over real sockets


@pytest.fixture(params=["memory", "redis", "fallback"])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[CallRegistry]:
    if request.param == "memory":
        reg: CallRegistry = MemoryCallRegistry()
    elif request.param == "redis":
        reg = RedisCallRegistry(await reachable_redis_url(), prefix=f"test:{uuid.uuid4().hex}:")
    else:  # what the app runs with Redis: Redis while it answers (its channel subscribed)
        reg = FallbackCallRegistry(RedisCallRegistry(
            await reachable_redis_url(), prefix=f"test:{uuid.uuid4().hex}:"))
        await reg.listen(lambda *_: None)
        assert reg.shared
    yield reg
    await reg.close()


async def test_a_plan_is_claimed_once_with_its_token(registry: CallRegistry) -> None:
    plan = make_plan()
    await registry.put(plan, ttl_s=30)
    assert await registry.count() == 1
    with pytest.raises(InvalidStreamToken, match="wrong"):
        await registry.claim(plan.call_sid, "not-the-token")
    claimed = await registry.claim(plan.call_sid, plan.token)  # a wrong try did not consume it
    assert claimed == plan
    with pytest.raises(InvalidStreamToken, match="already used"):
        await registry.claim(plan.call_sid, plan.token)
    assert await registry.count() == 0


async def test_unknown_call_is_not_found(registry: CallRegistry) -> None:
    with pytest.raises(CallPlanNotFound):
        await registry.claim("CA" + "9" * 32, "x")


async def test_plans_expire(registry: CallRegistry) -> None:
    plan = make_plan()
    await registry.put(plan, ttl_s=0.05)
    await asyncio.sleep(0.2)
    with pytest.raises(CallPlanNotFound):
        await registry.claim(plan.call_sid, plan.token)
    assert await registry.count() == 0


async def test_discard_forgets_the_plan(registry: CallRegistry) -> None:
    plan = make_plan()
    await registry.put(plan, ttl_s=30)
    await registry.discard(plan.call_sid)
    with pytest.raises(CallPlanNotFound):
        await registry.claim(plan.call_sid, plan.token)


async def test_pending_outbound_plans_are_taken_once(registry: CallRegistry) -> None:
    plan = make_outbound_plan("Dana")
    await registry.put_pending("p1", plan, ttl_s=30)
    taken = await registry.take_pending("p1")
    assert taken == plan and "Dana" in taken.greeting
    assert await registry.take_pending("p1") is None


async def test_only_one_of_two_racing_streams_wins(registry: CallRegistry) -> None:
    plan = make_plan()
    await registry.put(plan, ttl_s=30)
    results = await asyncio.gather(registry.claim(plan.call_sid, plan.token),
                                   registry.claim(plan.call_sid, plan.token),
                                   return_exceptions=True)
    assert sum(1 for r in results if not isinstance(r, Exception)) == 1


async def test_a_signal_is_heard_now_and_kept_once_for_a_later_stream(
        registry: CallRegistry) -> None:
    heard: list[tuple[str, str, str]] = []
    got_one = asyncio.Event()

    def listener(call_sid: str, name: str, value: str) -> None:
        heard.append((call_sid, name, value))
        got_one.set()

    await registry.listen(listener)
    await registry.signal("CA1", "amd", "machine_end_beep", ttl_s=30)
    await asyncio.wait_for(got_one.wait(), 5)
    assert heard == [("CA1", "amd", "machine_end_beep")]
    assert await registry.take_signal("CA1", "amd") == "machine_end_beep"
    assert await registry.take_signal("CA1", "amd") is None  # once
    assert await registry.take_signal("CA2", "amd") is None


async def test_signals_expire(registry: CallRegistry) -> None:
    await registry.signal("CA1", "amd", "human", ttl_s=0.05)
    await asyncio.sleep(0.2)
    assert await registry.take_signal("CA1", "amd") is None


async def test_a_signal_posted_to_one_instance_reaches_the_others() -> None:
    url, prefix = await reachable_redis_url(), f"test:{uuid.uuid4().hex}:"
    posting, running = (RedisCallRegistry(url, prefix=prefix) for _ in range(2))
    try:
        heard: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        await running.listen(lambda *signal: heard.put_nowait(signal))
        await posting.signal("CA7", "amd", "human", ttl_s=30)
        assert await asyncio.wait_for(heard.get(), 5) == ("CA7", "amd", "human")
        assert await running.take_signal("CA7", "amd") == "human"  # kept across instances
    finally:
        await posting.close()
        await running.close()


async def test_with_redis_unreachable_the_instance_keeps_its_calls_in_memory() -> None:
    """Nothing listens on the port: every Redis operation fails at once (refused)."""
    registry = FallbackCallRegistry(RedisCallRegistry(f"redis://127.0.0.1:{free_port()}/0"))
    heard: list[tuple[str, str, str]] = []
    try:
        await registry.listen(lambda *signal: heard.append(signal))  # does not raise
        assert not registry.shared
        plan = make_plan()
        assert await registry.put(plan, ttl_s=30) is False  # this instance's only
        assert await registry.count() == 1
        with pytest.raises(InvalidStreamToken):
            await registry.claim(plan.call_sid, "not-the-token")
        assert await registry.claim(plan.call_sid, plan.token) == plan
        with pytest.raises(InvalidStreamToken, match="already used"):
            await registry.claim(plan.call_sid, plan.token)
        # A plan made elsewhere cannot be found while Redis is down: said as such.
        with pytest.raises(RegistryUnavailable):
            await registry.claim("CA-made-elsewhere", "token")
        # Signals reach this instance's own listeners, and wait for a stream not started.
        await registry.signal("CA1", "amd", "human", ttl_s=30)
        assert heard == [("CA1", "amd", "human")]
        assert await registry.take_signal("CA1", "amd") == "human"
        await registry.publish("CA1", "stream_claimed", "elsewhere")  # nobody to tell
        assert heard == [("CA1", "amd", "human")]
        outbound = make_outbound_plan()
        await registry.put_pending("pending-1", outbound, ttl_s=30)
        assert await registry.take_pending("pending-1") == outbound
        await registry.discard(plan.call_sid)
    finally:
        await registry.close()
