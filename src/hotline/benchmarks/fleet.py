"""`hotline bench fleet`: the greeting's stream `start` → first frame at the phone, on the
same-instance and the cross-instance path, from one run of a real fleet (two `hotline
serve` processes behind a private nginx, the machine's Redis, a temporary SQLite store;
the simulated engine with its modeled latency, at real time).

One fleet, streams not pinned (no HOTLINE_INSTANCE_URL), calls one at a time:
- same instance: the phone reaches one instance directly for the webhook and the stream
  (a load balancer that routes the stream back to the webhook's instance);
- cross-instance: webhook and stream through nginx, whose round robin (one worker) sends
  the stream to the other instance. Each call's path is read from its timeline
  (`stream_claimed`), not assumed.
Also counted: warm engine sessions still open once the calls are over (each one an
engine connection held for nothing until its expiry).
"""

from __future__ import annotations

import asyncio
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hotline.benchmarks.stats import percentile
from hotline.benchmarks.tenants import bench_business, lane_number
from hotline.fleet.fleet import Fleet, FleetConfig
from hotline.settings import DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, DEV_OPENAI_KEY
from hotline.sim.engine import EngineSimulator, LatencyProfile
from hotline.sim.phone import SimulatedPhone
from hotline.sim.script import CallScript, Hangup, WaitForAgentAudio
from hotline.sim.twilio_api import TwilioApiSimulator
from hotline.store.database import Store

SECTION = "fleet"
LISTEN = CallScript([WaitForAgentAudio(played_ms=1000, timeout_ms=20_000), Hangup()])
SETTLE_S = 2.0  # after the last call: time for the warm sessions to be closed


SAME, CROSS = "same instance", "cross-instance"


@dataclass
class FleetBench:
    calls: int
    redis_url: str
    samples: dict[str, list[float]] = field(default_factory=lambda: {SAME: [], CROSS: []})
    engine_paths: dict[str, list[str]] = field(default_factory=lambda: {SAME: [], CROSS: []})
    warm_left_open: int = 0
    seconds: float = 0.0

    def line(self, path: str) -> str:
        values = self.samples[path]
        if not values:
            return f"| {path} | 0 | – | – | – | |"
        p50, p95 = percentile(values, 50), percentile(values, 95)
        assert p50 is not None and p95 is not None
        engines = ", ".join(sorted(set(self.engine_paths[path])))
        return (f"| {path} | {len(values)} | {p50:.1f} | {p95:.1f} | {max(values):.1f} | "
                f"{engines} |")


async def _one_call(phone: SimulatedPhone, store: Store, number: str) -> tuple[str, float, str]:
    result = await phone.call(to=number, from_="+15550001111", script=LISTEN)
    ms = result.start_to_first_media_ms
    if ms is None:
        raise RuntimeError(f"call {result.call_sid} got no greeting: {result.failure}")
    async with asyncio.timeout(20):
        while True:
            record = await store.get_call(result.call_sid)
            if record is not None and record.timeline:
                break
            await asyncio.sleep(0.02)
    detail = {s.stage: s.detail for s in record.timeline}
    path = CROSS if detail.get("stream_claimed", "").endswith(CROSS) else SAME
    return path, ms, detail.get("engine_ready", "?")


async def bench_fleet(calls: int, redis_url: str) -> FleetBench:
    bench = FleetBench(calls, redis_url)
    started = time.monotonic()
    business = bench_business(0)
    with tempfile.TemporaryDirectory(prefix="hotline-bench-fleet-") as temp:
        work = Path(temp)
        database_url = f"sqlite+aiosqlite:///{work / 'hotline.db'}"
        store = Store(database_url)
        await store.upgrade()
        await store.save_business(business)
        engine = EngineSimulator(LatencyProfile.modeled(), api_key=DEV_OPENAI_KEY)
        await engine.start()
        twilio = TwilioApiSimulator(account_sid=DEV_ACCOUNT_SID, auth_token=DEV_AUTH_TOKEN)
        await twilio.start()
        fleet = Fleet(FleetConfig(
            database_url=database_url, redis_url=redis_url, work_dir=work / "fleet",
            pin_streams=False, drain_timeout_s=10, env={
                "HOTLINE_OPENAI_API_KEY": DEV_OPENAI_KEY,
                "HOTLINE_OPENAI_REALTIME_URL": engine.url,
                "HOTLINE_TWILIO_API_URL": twilio.url,
                "HOTLINE_TWILIO_ACCOUNT_SID": DEV_ACCOUNT_SID,
                "HOTLINE_TWILIO_AUTH_TOKEN": DEV_AUTH_TOKEN,
                "HOTLINE_LOG_LEVEL": "WARNING"}))
        try:
            await fleet.start()
            through_nginx = twilio.attach_phone(SimulatedPhone(
                server_url=fleet.public_url, auth_token=DEV_AUTH_TOKEN,
                account_sid=DEV_ACCOUNT_SID))
            direct = [twilio.attach_phone(SimulatedPhone(
                server_url=fleet.public_url, auth_token=DEV_AUTH_TOKEN,
                account_sid=DEV_ACCOUNT_SID, connect_to=instance.url))
                for instance in fleet.instances]
            number = lane_number(0)
            for index in range(calls * 2):
                phone = through_nginx if index % 2 else direct[(index // 2) % len(direct)]
                path, ms, engine_path = await _one_call(phone, store, number)
                bench.samples[path].append(ms)
                bench.engine_paths[path].append(engine_path)
            await asyncio.sleep(SETTLE_S)
            bench.warm_left_open = sum(1 for s in engine.sessions if not s.closed.is_set())
        finally:
            await fleet.stop()
            await twilio.stop()
            await engine.stop()
            await store.close()
    bench.seconds = time.monotonic() - started
    return bench


def render_section(bench: FleetBench, command: str) -> str:
    return "\n".join([
        "## Fleet: the greeting on the same-instance and the cross-instance path",
        "",
        f"`{command}`: two `hotline serve` instances behind nginx (one worker), on Redis "
        "and one store; the simulated engine's modeled latency, real time, one call at a "
        "time; each call listens to 1 s of its (cached) greeting and hangs up. "
        "Same instance: the webhook and the stream reach one instance (what "
        "HOTLINE_INSTANCE_URL gives); cross-instance: both through nginx, the stream "
        "landing on the other instance (the path read from each call's timeline).",
        "",
        "| path | calls | start → first frame p50 (ms) | p95 (ms) | max (ms) | engine session |",
        "|---|---|---|---|---|---|",
        bench.line(SAME),
        bench.line(CROSS),
        "",
        f"The greeting plays from each instance's own cache (loaded when the config loads, "
        f"from the audio another instance rendered and shared through Redis, else rendered "
        f"there), so the cross-instance path greets as fast; what differs "
        f"is the engine session behind it (`cold`: connected at `start`, in parallel with "
        f"the greeting). Warm sessions still open {SETTLE_S:.0f} s after the last call: "
        f"{bench.warm_left_open} (the webhook's instance closes its unclaimed one as soon "
        f"as another instance takes the stream). Run time {bench.seconds:.0f} s.",
    ])


def command_line(calls: int) -> str:
    return shlex.join(["hotline", "bench", "fleet", "--calls", str(calls)])
