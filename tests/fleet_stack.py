"""A fleet for tests: `hotline serve` instances (child processes) behind a private nginx
(`hotline.fleet`), a private redis-server, the store under test; the simulated engine,
Twilio REST API and phone in the test process, on the compressed `TEST_CLOCK` (the
instances run their call clock at the same speed)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from hotline.business import BusinessConfig
from hotline.core.record import CallRecord
from hotline.fleet.fleet import Fleet, FleetConfig
from hotline.sim.engine import EngineSimulator, LatencyProfile
from hotline.sim.phone import SimulatedPhone
from hotline.sim.twilio_api import TwilioApiSimulator
from hotline.store.database import Store
from tests.redis_server import PrivateRedis
from tests.server_process import SRC, free_port
from tests.services import unavailable
from tests.stack import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OPENAI_KEY,
    TEST_CLOCK,
    seeded_store,
    started_simulators,
)

API_TOKEN = "fleet-api-token-123456"


@dataclass
class FleetStack:
    fleet: Fleet
    redis: PrivateRedis
    engine: EngineSimulator
    twilio: TwilioApiSimulator
    phone: SimulatedPhone
    store: Store
    http: httpx.AsyncClient

    def phone_at(self, instance_id: str) -> SimulatedPhone:
        """A phone whose webhooks (and streams) reach this instance directly, signed for
        the public URL as Twilio would: a load balancer that chose it."""
        phone = SimulatedPhone(server_url=self.fleet.public_url, auth_token=AUTH_TOKEN,
                               account_sid=ACCOUNT_SID, clock=TEST_CLOCK,
                               connect_to=self.fleet.instance(instance_id).url)
        return self.twilio.attach_phone(phone)

    async def record(self, call_sid: str, timeout_s: float = 30.0) -> CallRecord:
        """The call's record in the shared store, once its instance has written it (a final
        status callback may give it an outcome before that)."""
        async with asyncio.timeout(timeout_s):
            while True:
                record = await self.store.get_call(call_sid)
                if record is not None and record.outcome and record.timeline:
                    return record
                await asyncio.sleep(0.05)

    async def metric(self, instance_id: str, name: str) -> float:
        response = await self.http.get(f"{self.fleet.instance(instance_id).url}/metrics")
        line = next(line for line in response.text.splitlines()
                    if line.startswith(name + " "))
        return float(line.split()[1])

    async def running_on(self, timeout_s: float = 20.0) -> str:
        """The instance that has a call running (the first found)."""
        async with asyncio.timeout(timeout_s):
            while True:
                for instance in self.fleet.instances:
                    if await self.metric(instance.instance_id, "hotline_active_calls") > 0:
                        return instance.instance_id
                await asyncio.sleep(0.02)


@asynccontextmanager
async def fleet_stack(database_url: str, tmp_path: Path, businesses: Iterable[BusinessConfig],
                      *, instances: int = 2, pin_streams: bool = True,
                      public_url: str | None = None,
                      profile: LatencyProfile | None = None,
                      **settings: str) -> AsyncIterator[FleetStack]:
    if shutil.which("nginx") is None and shutil.which("/usr/sbin/nginx") is None:
        unavailable("nginx", "not installed (make install)")
    store = await seeded_store(database_url, businesses)
    redis = PrivateRedis(tmp_path / "redis")
    await redis.start()
    engine, twilio = await started_simulators(profile, TEST_CLOCK)
    env = {
        "PYTHONPATH": str(SRC),
        "HOTLINE_OPENAI_API_KEY": OPENAI_KEY, "HOTLINE_OPENAI_REALTIME_URL": engine.url,
        "HOTLINE_TWILIO_API_URL": twilio.url, "HOTLINE_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "HOTLINE_TWILIO_AUTH_TOKEN": AUTH_TOKEN, "HOTLINE_API_TOKEN": API_TOKEN,
        "HOTLINE_CLOCK_SPEED": str(TEST_CLOCK.speed), "HOTLINE_LOG_FORMAT": "json",
        # Callers who wait quietly are not nudged or hung up on.
        "HOTLINE_SILENCE_NUDGE_S": "600", "HOTLINE_SILENCE_HANGUP_S": "1200",
        **{f"HOTLINE_{name.upper()}": value for name, value in settings.items()},
    }
    fleet = Fleet(FleetConfig(database_url=database_url, redis_url=redis.url,
                              work_dir=tmp_path / "fleet", instances=instances,
                              # Below the ephemeral range (tests/server_process.py).
                              port=free_port(),
                              instance_ports=tuple(free_port() for _ in range(instances)),
                              pin_streams=pin_streams, check_interval_s=0.1,
                              public_url=public_url,
                              drain_timeout_s=float(settings.get("drain_timeout_s", "60")),
                              env=env))
    http = httpx.AsyncClient(timeout=10)
    try:
        await fleet.start()
        # A public URL of its own (a tunnel, TLS in front of nginx) is reached at nginx.
        phone = twilio.attach_phone(SimulatedPhone(
            server_url=fleet.public_url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID,
            clock=TEST_CLOCK, connect_to=fleet.url if public_url else None))
        yield FleetStack(fleet, redis, engine, twilio, phone, store, http)
    except BaseException:
        for instance in fleet.instances:
            print(f"--- {instance.instance_id} log tail\n{instance.log_tail()}")
        raise
    finally:
        await fleet.stop()
        await http.aclose()
        await twilio.stop()
        await engine.stop()
        redis.stop()
        await store.close()
