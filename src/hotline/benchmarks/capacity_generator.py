"""One load-generator process of `hotline bench capacity`: the lean engine (sharing the
engine port with the other generators, SO_REUSEPORT) and the lean phones of its share of
the calls, on one uvloop, driven by one 20 ms clock.

Commands come as JSON lines on stdin, answers go as JSON lines on stdout:
  {"calls": N}   hold N calls (new ones are placed `RAMP_PER_S` a second; extra ones hang up)
  {"reset": 1}   start a measurement window
  {"report": 1}  the window's counts
  {"exit": 1}    hang up everything and exit
The clock's own lateness (how late each 20 ms tick ran) is the generator's lag: when it
grows, the figures are the harness's, not the server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from typing import Any

import httpx
import orjson

from hotline.benchmarks.capacity_engine import DeltaAudio, EngineSession, EngineStats
from hotline.benchmarks.capacity_phone import PhoneCall, PhoneStats, place_call
from hotline.benchmarks.capacity_wire import MESSAGE_COUNT

TICK_S = 0.020
# New calls a second, per generator: a burst of engine connects (each an SDK
# connect and session.update) slower than this overran the server's 900 ms connect budget
# on a loaded machine, and those calls went on without an engine.
RAMP_PER_S = 20
LAG_BUCKET_MS = 1.0


class Generator:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.audio = DeltaAudio(int(config["delta_ms"]))
        self.engine_stats = EngineStats()
        self.sessions: set[EngineSession] = set()
        self.stats = PhoneStats()
        self.calls: list[PhoneCall] = []
        self.wanted = 0
        self.placing = 0
        self.lags = [0] * 1000
        self.lag_max_ms = 0.0
        self.window_started = time.monotonic()
        self.cpu_started = time.process_time()
        self.failures: list[str] = []
        self._index = int(config["index"]) * 100_000
        self.call_s = float(config.get("call_s") or 0)  # 0: calls last until told
        self.placed = self.ended = 0  # since the start (the soak checks their records)

    async def serve_engine(self) -> asyncio.Server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", int(self.config["engine_port"])))
        return await asyncio.get_running_loop().create_server(
            lambda: EngineSession(self.sessions, self.audio, self.engine_stats),
            sock=sock, backlog=4096)

    async def clock(self) -> None:
        """Every 20 ms: the engine's deltas due, each phone's caller frame and due marks."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += TICK_S
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
            late_ms = max(0.0, (loop.time() - next_at) * 1000)
            self.lags[min(int(late_ms / LAG_BUCKET_MS), len(self.lags) - 1)] += 1
            self.lag_max_ms = max(self.lag_max_ms, late_ms)
            if late_ms > 200:  # far behind: skip ahead rather than burst
                next_at = loop.time()
            now = time.monotonic()
            for session in list(self.sessions):
                session.tick(now)
            for call in self.calls:
                call.tick(now)

    async def hold_calls(self, http: httpx.AsyncClient) -> None:
        """Place or hang up calls until `wanted` are up, `RAMP_PER_S` a second."""
        while True:
            if self.call_s:
                now = time.monotonic()
                for call in self.calls:
                    if now - call.placed_at > self.call_s * call.length_factor:
                        call.hang_up()
            before = len(self.calls)
            self.calls = [c for c in self.calls if c.open]
            self.ended += before - len(self.calls)
            missing = self.wanted - len(self.calls) - self.placing
            if missing < 0:
                for call in self.calls[missing:]:
                    call.hang_up()
            for _ in range(max(0, min(missing, max(1, RAMP_PER_S // 10)))):
                self.placing += 1
                asyncio.get_running_loop().create_task(self._place(http))
            await asyncio.sleep(0.1)

    async def _place(self, http: httpx.AsyncClient) -> None:
        self._index += 1
        try:
            call = await place_call(http, self.config["server_url"], self.config["auth_token"],
                                    self.config["account_sid"], self.config["to"],
                                    f"+1415{self._index % 10_000_000:07d}", self.stats,
                                    float(self.config["turn_every_s"]))
        except Exception as exc:  # counted and reported: a call that could not start
            self.failures.append(f"call not placed: {type(exc).__name__}: {exc}"[:300])
        else:
            self.placed += 1
            self.calls.append(call)
        finally:
            self.placing -= 1

    def report(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.window_started
        cpu = time.process_time() - self.cpu_started
        stats, engine = self.stats, self.engine_stats
        return {
            "elapsed_s": elapsed, "cpu_s": cpu, "calls": len([c for c in self.calls if c.open]),
            "delays": {i: n for i, n in enumerate(stats.delays) if n},
            "delay_max_ms": stats.delay_max_ms, "frames": stats.frames, "lost": stats.lost,
            "duplicated": stats.duplicated, "reordered": stats.reordered, "gaps": stats.gaps,
            "max_gap_ms": stats.max_gap_ms, "marks_echoed": stats.marks_echoed,
            "clears": stats.clears, "frames_sent": stats.frames_sent,
            "untagged": stats.untagged,
            "lags": {i: n for i, n in enumerate(self.lags) if n}, "lag_max_ms": self.lag_max_ms,
            "deltas_sent": engine.deltas_sent, "responses": engine.responses,
            "turns": engine.turns, "truncates": engine.truncates,
            "truncates_past_audio": engine.truncates_past_audio,
            "engine_errors": engine.errors, "sessions": len(self.sessions),
            "failures": (self.failures + stats.failures)[:5],
            "failure_count": len(self.failures) + len(stats.failures),
            "placed": self.placed, "ended": self.ended, "placing": self.placing,
            "messages": MESSAGE_COUNT.messages,
        }

    def reset(self) -> None:
        self.stats = PhoneStats()
        for call in self.calls:
            call.stats = self.stats
        self.engine_stats.clear()
        self.lags = [0] * 1000
        self.lag_max_ms = 0.0
        self.failures = []
        self.window_started = time.monotonic()
        self.cpu_started = time.process_time()
        MESSAGE_COUNT.messages = 0


async def _main(config: dict[str, Any]) -> None:
    generator = Generator(config)
    server = await generator.serve_engine()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=30) as http:
        tasks = [loop.create_task(generator.clock()), loop.create_task(generator.hold_calls(http))]
        _say({"ready": True})
        try:
            while line := await reader.readline():
                command = orjson.loads(line)
                if "calls" in command:
                    generator.wanted = int(command["calls"])
                    _say({"ok": True})
                elif "reset" in command:
                    generator.reset()
                    _say({"ok": True})
                elif "report" in command:
                    _say(generator.report())
                elif "exit" in command:
                    break
        finally:
            for call in generator.calls:
                call.hang_up()
            await asyncio.sleep(0.2)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks)
            server.close()
            _say({"bye": True})


def _say(message: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS) + b"\n")
    sys.stdout.buffer.flush()


def generator_main() -> None:
    """`python -c ... CONFIG_JSON` (see `hotline.benchmarks.capacity`)."""
    import uvloop

    config = orjson.loads(sys.argv[1])
    uvloop.run(_main(config))
