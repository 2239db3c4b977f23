"""`hotline serve` in a child process, as in production, for tests that send it signals.

The simulated engine and Twilio run in the test process (on `TEST_CLOCK`); the server's
call clock runs at the same speed (`HOTLINE_CLOCK_SPEED`). Its log (stderr, JSON lines)
goes to a file the test can read.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from hotline.business import BusinessConfig
from hotline.sim.engine import EngineSimulator, LatencyProfile
from hotline.sim.phone import SimulatedPhone
from hotline.sim.twilio_api import TwilioApiSimulator
from tests.stack import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OPENAI_KEY,
    TEST_CLOCK,
    seeded_store,
    started_simulators,
)

SRC = Path(__file__).resolve().parent.parent / "src"
START_TIMEOUT_S = 60.0


@dataclass
class ServerProcess:
    process: asyncio.subprocess.Process
    url: str
    log_path: Path
    journal_path: Path
    database_url: str
    engine: EngineSimulator
    twilio: TwilioApiSimulator
    phone: SimulatedPhone
    http: httpx.AsyncClient

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> float:
        """Send `sig`; returns when (monotonic seconds)."""
        self.process.send_signal(sig)
        return time.monotonic()

    async def exit_code(self, timeout_s: float) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout_s)

    async def active_calls(self) -> int:
        """The server's own count, as Prometheus scrapes it."""
        response = await self.http.get("/metrics")
        line = next(line for line in response.text.splitlines()
                    if line.startswith("hotline_active_calls "))
        return int(float(line.split()[1]))

    async def wait_for_active_calls(self, count: int, timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s):
            while True:
                if await self.active_calls() == count:
                    return
                await asyncio.sleep(0.02)

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()


def free_port() -> int:
    """A port free now, for a process that binds it later: taken below the kernel's
    ephemeral range, so that no socket bound to port 0 meanwhile (another test worker's
    simulator, say) can take it first and answer in the server's place."""
    low, _ = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range")
              .read_text().split())
    for _ in range(200):
        port = random.randrange(max(1024, low - 12_000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken: another try
            return port
    raise RuntimeError("no free port below the ephemeral range")


@contextmanager
def port_held(port: int) -> Iterator[None]:
    """Keep `port` bound but not listening: connections to it are refused, and no other
    test's socket can be given it (a stopped simulator's port, reused by another test
    worker's simulator, would answer this test's server in its place)."""
    with socket.socket() as sock:
        # (Its accepted connections may linger in TIME_WAIT: they don't stop this bind.)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        yield


@asynccontextmanager
async def served(database_url: str, tmp_path: Path, businesses: Iterable[BusinessConfig],
                 *, profile: LatencyProfile | None = None,
                 **settings: str) -> AsyncIterator[ServerProcess]:
    """`hotline serve` (its settings: HOTLINE_<NAME> for each keyword) with the simulators;
    killed at the end if the test has not made it exit."""
    await (await seeded_store(database_url, businesses)).close()
    engine, twilio = await started_simulators(profile, TEST_CLOCK)
    port = free_port()
    journal_path = tmp_path / "data" / "journal.jsonl"  # its default place, in the data dir
    env = {
        # Without PYTHONDONTWRITEBYTECODE: a second server process imports from the caches.
        **{k: v for k, v in os.environ.items()
           if not k.startswith("HOTLINE_") and k != "PYTHONDONTWRITEBYTECODE"},
        "PYTHONPATH": str(SRC),
        "HOTLINE_HOST": "127.0.0.1", "HOTLINE_PORT": str(port),
        "HOTLINE_DATABASE_URL": database_url,
        "HOTLINE_OPENAI_API_KEY": OPENAI_KEY, "HOTLINE_OPENAI_REALTIME_URL": engine.url,
        "HOTLINE_TWILIO_API_URL": twilio.url, "HOTLINE_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "HOTLINE_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "HOTLINE_GREETING_CACHE_DIR": str(tmp_path / "greetings"),
        "HOTLINE_DATA_DIR": str(tmp_path / "data"),
        "HOTLINE_CLOCK_SPEED": str(TEST_CLOCK.speed),
        "HOTLINE_LOG_FORMAT": "json",
        **{f"HOTLINE_{name.upper()}": value for name, value in settings.items()},
    }
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from hotline.cli import main; main()", "serve",
            cwd=tmp_path, env=env, stdout=log_file, stderr=log_file)
    url = f"http://127.0.0.1:{port}"
    http = httpx.AsyncClient(base_url=url, timeout=10)
    try:
        await _wait_until_serving(http, process, log_path)
        phone = twilio.attach_phone(SimulatedPhone(
            server_url=url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID, clock=TEST_CLOCK))
        yield ServerProcess(process, url, log_path, journal_path, database_url, engine,
                            twilio, phone, http)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await http.aclose()
        await twilio.stop()
        await engine.stop()


async def _wait_until_serving(http: httpx.AsyncClient, process: asyncio.subprocess.Process,
                              log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.returncode is not None:
            break
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"hotline serve did not start (exit {process.returncode}):\n"
                       + _tail(log_path))


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]
