"""Redis registry: plans shared by every instance, so the stream may land on any of them.

Signals for a call (an answering-machine verdict posted to whichever instance Twilio
reached) are kept under a key for a stream not started yet and published on one channel
that every instance listens to, so the instance running the call hears them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
import redis.asyncio as aioredis

from hotline.errors import CallPlanNotFound, InvalidStreamToken, RegistryUnavailable
from hotline.plan import CallPlan
from hotline.registry.base import SignalListener
from hotline.registry.memory import CLAIMED_MEMORY_S

log = logging.getLogger("hotline.registry")
RESUBSCRIBE_AFTER_S = 1.0  # after the pub/sub connection drops
# A Redis that is down must not hold a webhook: a refused connection fails at once, an
# unreachable host within these.
CONNECT_TIMEOUT_S = 0.5
COMMAND_TIMEOUT_S = 1.0

_PREFIX = "hotline:"
# Compare the token and delete in one step, so a wrong token never consumes the plan and
# two streams racing for one plan can't both win.
_CLAIM = """
local raw = redis.call('GET', KEYS[1])
if not raw then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'reused'} end
  return {'missing'}
end
local plan = cjson.decode(raw)
if plan['token'] ~= ARGV[1] then return {'wrong'} end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[2]))
return {'ok', raw}
"""


class RedisCallRegistry:
    def __init__(self, url: str, *, prefix: str = _PREFIX) -> None:
        self._prefix = prefix
        self._redis = aioredis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                              socket_timeout=COMMAND_TIMEOUT_S)
        self._claim = self._redis.register_script(_CLAIM)
        self._channel = prefix + "signals"
        self._listeners: list[SignalListener] = []
        self._subscriber: asyncio.Task[None] | None = None
        # The signal channel is subscribed now: Redis answers (the fleet's health probe).
        self.connected = False

    async def publish(self, call_sid: str, name: str, value: str) -> None:
        """A signal for every instance's listeners now, not kept for later."""
        try:
            await self._redis.publish(self._channel, orjson.dumps([call_sid, name, value]))
        except (aioredis.RedisError, OSError) as exc:
            raise RegistryUnavailable(f"call registry unavailable: {exc}") from exc

    @property
    def shared(self) -> bool:
        return self.connected

    async def put(self, plan: CallPlan, ttl_s: float) -> bool:
        await self._redis.set(self._prefix + "plan:" + plan.call_sid, orjson.dumps(plan.to_dict()),
                              px=int(ttl_s * 1000))
        return True

    async def claim(self, call_sid: str, token: str) -> CallPlan:
        try:
            result = await self._claim(
                keys=[self._prefix + "plan:" + call_sid, self._prefix + "claimed:" + call_sid],
                args=[token, int(CLAIMED_MEMORY_S)],
            )
        except (aioredis.RedisError, OSError) as exc:
            raise RegistryUnavailable(f"call registry unavailable: {exc}") from exc
        verdict = result[0].decode() if isinstance(result[0], bytes) else result[0]
        if verdict == "ok":
            return CallPlan.from_dict(orjson.loads(result[1]))
        if verdict == "reused":
            raise InvalidStreamToken(f"stream token for {call_sid} was already used")
        if verdict == "wrong":
            raise InvalidStreamToken(f"wrong stream token for {call_sid}")
        raise CallPlanNotFound(f"no call plan for {call_sid} (expired or unknown)")

    async def discard(self, call_sid: str) -> None:
        await self._redis.delete(self._prefix + "plan:" + call_sid)

    async def put_pending(self, pending_id: str, plan: CallPlan, ttl_s: float) -> None:
        await self._redis.set(self._prefix + "pending:" + pending_id, orjson.dumps(plan.to_dict()),
                              px=int(ttl_s * 1000))

    async def take_pending(self, pending_id: str) -> CallPlan | None:
        raw = await self._redis.getdel(self._prefix + "pending:" + pending_id)
        return CallPlan.from_dict(orjson.loads(raw)) if raw else None

    async def count(self) -> int:
        total = 0
        for pattern in ("plan:*", "pending:*"):
            async for _ in self._redis.scan_iter(match=self._prefix + pattern, count=500):
                total += 1
        return total

    async def signal(self, call_sid: str, name: str, value: str, ttl_s: float) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._signal_key(call_sid, name), value, px=int(ttl_s * 1000))
                pipe.publish(self._channel, orjson.dumps([call_sid, name, value]))
                await pipe.execute()
        except (aioredis.RedisError, OSError) as exc:
            raise RegistryUnavailable(f"call registry unavailable: {exc}") from exc

    async def take_signal(self, call_sid: str, name: str) -> str | None:
        try:
            raw = await self._redis.getdel(self._signal_key(call_sid, name))
        except (aioredis.RedisError, OSError) as exc:
            raise RegistryUnavailable(f"call registry unavailable: {exc}") from exc
        return raw.decode() if isinstance(raw, bytes) else raw

    async def listen(self, listener: SignalListener) -> None:
        self._listeners.append(listener)
        if self._subscriber is None:
            subscribed = asyncio.get_running_loop().create_future()
            self._subscriber = asyncio.create_task(self._subscribe(subscribed),
                                                   name="registry-signals")
            await asyncio.shield(subscribed)

    async def _subscribe(self, subscribed: asyncio.Future[None]) -> None:
        """Hear the signal channel for as long as the registry lives, resubscribing when the
        connection drops (a signal missed meanwhile is still kept for `take_signal`). If the
        first subscription fails, `listen` raises, and this goes on trying in the background."""
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    if not self.connected:
                        log.info("signal channel subscribed: Redis is reachable")
                    self.connected = True
                    if not subscribed.done():
                        subscribed.set_result(None)
                    # (listen() blocks without the command timeout; a dropped connection
                    # still ends it.)
                    async for message in pubsub.listen():
                        self._dispatch(message.get("data"))
            except (aioredis.RedisError, OSError) as exc:
                was_connected, self.connected = self.connected, False
                if not subscribed.done():
                    subscribed.set_exception(
                        RegistryUnavailable(f"call registry unavailable: {exc}"))
                elif was_connected:
                    log.warning("signal channel lost (%s); resubscribing", exc)
                await asyncio.sleep(RESUBSCRIBE_AFTER_S)

    def _dispatch(self, data: bytes | str) -> None:
        try:
            call_sid, name, value = orjson.loads(data)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            log.warning("malformed signal ignored")
            return
        for listener in self._listeners:
            try:
                listener(str(call_sid), str(name), str(value))
            except Exception:  # a listener's bug must not stop the channel
                log.exception("signal listener failed")

    def _signal_key(self, call_sid: str, name: str) -> str:
        return f"{self._prefix}signal:{call_sid}:{name}"

    async def close(self) -> None:
        if self._subscriber is not None:
            self._subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._subscriber
        await self._redis.aclose()
