"""Redis registry: plans shared by every instance, so the stream may land on any of them."""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis

from hotline.errors import CallPlanNotFound, InvalidStreamToken, RegistryUnavailable
from hotline.plan import CallPlan
from hotline.registry.memory import CLAIMED_MEMORY_S

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
        self._redis = aioredis.Redis.from_url(url)
        self._claim = self._redis.register_script(_CLAIM)

    async def put(self, plan: CallPlan, ttl_s: float) -> None:
        await self._redis.set(self._prefix + "plan:" + plan.call_sid, orjson.dumps(plan.to_dict()),
                              px=int(ttl_s * 1000))

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

    async def close(self) -> None:
        await self._redis.aclose()
