"""`hotline bench apology`: when no engine can be had, how soon does the caller hear the
apology? Stream `start` → first apology frame at the phone, at real time.

A real fault: the server's engine URL names a local port that is bound but not listening,
so every connection is refused (`refused`); or one that listens but never accepts, so every
handshake hangs until the connect budget cuts it (`hanging`). The simulated phone calls in,
`concurrency` at a time, listens to the start of the apology and hangs up. The server and
the simulators share this process and its event loop; all traffic crosses loopback sockets.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import platform
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from hotline.benchmarks.stats import percentile
from hotline.benchmarks.tenants import ACCOUNT_SID, AUTH_TOKEN, OPENAI_KEY, bench_business
from hotline.server import start_server
from hotline.settings import Settings
from hotline.sim.clock import REAL_TIME
from hotline.sim.phone import SimulatedPhone
from hotline.sim.script import CallScript, Hangup, WaitForAgentAudio
from hotline.sim.twilio_api import TwilioApiSimulator
from hotline.store.database import Store

BUDGET_MS = 1000.0  # the caller never hears more than a second of dead air
LISTEN_MS = 300  # each call hears this much of the apology, then hangs up
SECTION = "apology"  # its section of docs/benchmarks.md (one per fault)


class EngineFault(enum.StrEnum):
    REFUSED = "refused"  # connection refused: learnt in a few ms
    HANGING = "hanging"  # TCP connects, the handshake never answers: the budget cuts it


FAULT_NOTES = {
    EngineFault.REFUSED: "the server's engine URL names a local port bound but not "
                         "listening (connection refused): each attempt fails in a few ms",
    EngineFault.HANGING: "the server's engine URL names a local port that listens but never "
                         "accepts (TCP connects, the WebSocket handshake never answers): the "
                         "connect budget (`HOTLINE_ENGINE_CONNECT_BUDGET_MS`) cuts it",
}


def section_name(fault: EngineFault) -> str:
    return SECTION if fault is EngineFault.REFUSED else f"{SECTION}-{fault}"


@dataclass(slots=True)
class ApologySample:
    call_sid: str
    start_to_apology_ms: float | None  # at the phone: `start` sent → first frame received
    server_ms: float | None  # the server's timeline: stream_start → apology_started
    outcome: str


@dataclass(slots=True)
class ApologyResult:
    samples: list[ApologySample]
    fault: EngineFault
    concurrency: int
    started: datetime.datetime
    seconds: float

    def delays(self) -> list[float]:
        return [s.start_to_apology_ms for s in self.samples if s.start_to_apology_ms is not None]

    def summary(self) -> dict[str, float | None]:
        delays = self.delays()
        server = [s.server_ms for s in self.samples if s.server_ms is not None]
        return {"p50": percentile(delays, 50), "p95": percentile(delays, 95),
                "max": max(delays, default=None), "server_p50": percentile(server, 50),
                "server_max": max(server, default=None)}


async def bench_apology(calls: int, concurrency: int,
                        fault: EngineFault = EngineFault.REFUSED) -> ApologyResult:
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hotline-bench-apology-") as workdir, \
            socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        if fault is EngineFault.HANGING:
            refusing.listen(1024)  # the kernel completes connects; nobody ever answers
        database_url = f"sqlite+aiosqlite:///{workdir}/bench.db"
        business = bench_business(0)
        seed = Store(database_url)
        await seed.upgrade()
        await seed.save_business(business)
        await seed.close()
        twilio = TwilioApiSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                                    clock=REAL_TIME)
        await twilio.start()
        values: dict[str, Any] = {
            "database_url": database_url, "openai_api_key": OPENAI_KEY,
            "openai_realtime_url": f"ws://127.0.0.1:{refusing.getsockname()[1]}/v1",
            "twilio_api_url": twilio.url, "twilio_account_sid": ACCOUNT_SID,
            "twilio_auth_token": AUTH_TOKEN, "journal_path": f"{workdir}/journal.jsonl",
            "greeting_cache": False, "data_dir": f"{workdir}/data", "log_level": "WARNING",
            "api_token": None, "redis_url": None,
        }
        server = await start_server(Settings(_env_file=None, **values))
        try:
            phone = twilio.attach_phone(SimulatedPhone(
                server_url=server.url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID,
                clock=REAL_TIME))
            script = CallScript([WaitForAgentAudio(LISTEN_MS, timeout_ms=5000), Hangup()])
            gate = asyncio.Semaphore(concurrency)

            async def one() -> ApologySample:
                async with gate:
                    result = await phone.call(to=business.phone_numbers[0],
                                              from_="+15550001111", script=script)
                record = await server.services.final_record(result.call_sid, timeout_s=30)
                at = {s.stage: s.ms for s in record.timeline}
                server_ms = (at["apology_started"] - at["stream_start"]
                             if {"apology_started", "stream_start"} <= at.keys() else None)
                return ApologySample(result.call_sid, result.start_to_first_media_ms,
                                     server_ms, str(record.outcome))

            samples = list(await asyncio.gather(*(one() for _ in range(calls))))
        finally:
            await server.stop()
            await twilio.stop()
    return ApologyResult(samples, fault, concurrency, started, time.monotonic() - t0)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def render_section(result: ApologyResult, command: str) -> str:
    s = result.summary()
    delays = result.delays()
    within = sum(1 for d in delays if d <= BUDGET_MS)
    outcomes = sorted({x.outcome for x in result.samples})
    return "\n".join([
        f"## `hotline bench apology --fault {result.fault}`: engine unavailable, stream "
        "`start` → first apology frame",
        "",
        "Generated by `hotline bench apology`.",
        "",
        f"- Run: {result.started:%Y-%m-%d %H:%M} UTC, `{command}`, {result.seconds:.0f} s; "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, shared noisy 2-core machine",
        f"- Fault (`{result.fault}`): {FAULT_NOTES[result.fault]}; warm sessions on, no "
        "cached greeting: the webhook's attempt and the retries at `start` fail, the core "
        "plays the apology (the built-in recording: nothing could be rendered) then the tone",
        "- The delay is the time to learn the engine cannot be had plus the core's own",
        f"- {len(result.samples)} inbound calls, {result.concurrency} at a time, at real time; "
        "the phone hears 300 ms of the apology and hangs up; server and simulators in one "
        "process, over loopback sockets",
        "",
        "| measure | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|",
        f"| phone: `start` sent → first apology frame received | {_ms(s['p50'])} | "
        f"{_ms(s['p95'])} | {_ms(s['max'])} |",
        f"| server timeline: `stream_start` → `apology_started` | {_ms(s['server_p50'])} | "
        f"— | {_ms(s['server_max'])} |",
        "",
        f"Within the 1 s budget: {within} of {len(delays)} calls. Outcomes: "
        f"{', '.join(outcomes)}.",
    ])
