"""`hotline bench capacity`: how many full-duplex calls one core of `hotline serve` carries.

One `hotline serve` process (SQLite store, greeting cache off: every agent frame comes from
the engine) is pinned to core 0 with `taskset`; the load generators
(`hotline.benchmarks.capacity_generator`, each the lean engine and lean phones of its share
of the calls) run on the other cores. The concurrency ramps step by step; at each step,
once the calls are up and settled, one window is measured:

- at the phone: relay delay (the engine sent a delta → the phone received its Twilio media
  frame, read back from a tag in the audio) p50/p99/max; frames lost, duplicated or
  reordered; gaps (a frame later than its audio's length + 40 ms);
- on the server, from /proc (not the wall clock): CPU time (utime + stime) per call-second
  and RSS;
- the generators' own lag (how late their 20 ms clock ran) and CPU: when these show them
  saturated, the step's figures are the harness's limit, and it says so.

Calls per core = 1000 ÷ (server CPU ms per call-second). The step passes when p99 relay
delay ≤ 10 ms with no frame lost, duplicated or reordered.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hotline.benchmarks.capacity_phone import DELAY_BUCKET_MS
from hotline.benchmarks.capacity_profile import Profile, finish_profiler, start_profiler
from hotline.benchmarks.doc_sections import write_section
from hotline.benchmarks.tenants import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OPENAI_KEY,
    bench_business,
    lane_number,
)
from hotline.store.database import Store

SECTION = "capacity"
FLOOR_SECTION = "capacity-floor"
SOAK_SECTION = "capacity-soak"
P99_TARGET_MS = 10.0
LAG_LIMIT_MS = 5.0  # generator clock p99 lateness beyond which the harness is the limit
GENERATOR_CPU_LIMIT = 0.9  # of the cores they have


class ServerKind(StrEnum):
    """The server under test."""

    HOTLINE = "hotline"  # `hotline serve`
    FLOOR = "floor"  # the floor relay (`capacity_floor`): the leanest Python relay, not Hotline


@dataclass(frozen=True, slots=True)
class CapacityConfig:
    steps: tuple[int, ...] = (50, 100, 200, 300, 400, 500)
    delta_ms: int = 20
    generators: int = 2
    window_s: float = 8.0
    settle_s: float = 2.0
    turn_every_s: float = 4.0
    server_core: int = 0
    stop_on_fail: bool = True
    profile_at: int | None = None  # py-spy the server during this step's window
    server_src: str | None = None  # run the server from another checkout's src (before/after)
    call_s: float = 0.0  # calls hang up after this long and are replaced (0: never)
    # The server's and the generators' niceness: on a shared machine, a negative one (root
    # only) keeps other work from starving them, as dedicated cores would.
    nice: int = 0
    # HOTLINE_* settings for the server under test (e.g. a setting's effect on capacity).
    server_env: tuple[tuple[str, str], ...] = ()
    server: ServerKind = ServerKind.HOTLINE


@dataclass(slots=True)
class StepResult:
    calls: int
    window_s: float
    server_cpu_s: float
    rss_mb: float
    idle_rss_mb: float
    frames: int
    lost: int
    duplicated: int
    reordered: int
    gaps: int
    max_gap_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    generator_cpu: float  # fraction of the generators' cores
    marks: int
    clears: int
    turns: int
    truncates_past_audio: int
    engine_errors: int
    failures: list[str] = field(default_factory=list)
    load_average: float = 0.0  # the machine's 1-minute load average after the window
    untagged: int = 0  # frames the engine did not make (canned lines: the engine failed)
    server_kernel_s: float = 0.0  # of server_cpu_s, in the kernel (stime)
    messages: int = 0  # WebSocket messages through the server in the window, both ways
    generator_cpu_s: float = 0.0  # the generators' CPU seconds in the window, all of them

    @property
    def messages_per_call_s(self) -> float:
        return self.messages / max(1e-9, self.calls * self.window_s)

    @property
    def us_per_message(self) -> float:
        """The server's CPU per WebSocket message it received or sent, all work included."""
        return self.server_cpu_s * 1e6 / max(1, self.messages)

    @property
    def generator_us_per_message(self) -> float:
        """The lean generators' CPU per message: they are the other end of every message
        the server handles, with pre-framed writes and no library."""
        return self.generator_cpu_s * 1e6 / max(1, self.messages)

    @property
    def kernel_share(self) -> float:
        return self.server_kernel_s / max(1e-9, self.server_cpu_s)

    @property
    def cpu_ms_per_call_s(self) -> float:
        if not self.calls:
            return float("nan")  # no call was up in the window
        return self.server_cpu_s * 1000 / (self.calls * self.window_s)

    @property
    def calls_per_core(self) -> float:
        return 1000 / max(1e-9, self.cpu_ms_per_call_s)

    @property
    def server_cpu(self) -> float:
        return self.server_cpu_s / self.window_s

    @property
    def mb_per_call(self) -> float:
        return max(0.0, self.rss_mb - self.idle_rss_mb) / max(1, self.calls)

    @property
    def passed(self) -> bool:
        return (self.p99_ms <= P99_TARGET_MS and self.lost == 0 and self.duplicated == 0
                and self.reordered == 0 and self.frames > 0 and self.untagged == 0)

    @property
    def generator_limited(self) -> bool:
        return self.lag_p99_ms > LAG_LIMIT_MS or self.generator_cpu >= GENERATOR_CPU_LIMIT

    @property
    def limit(self) -> str:
        if self.generator_limited:
            return "load generator"
        if self.server_cpu >= 0.95:
            return "server CPU"
        return "-" if self.passed else "relay delay"


@dataclass(slots=True)
class CapacityRun:
    config: CapacityConfig
    steps: list[StepResult]
    profile: Profile | None = None
    server_log: list[str] = field(default_factory=list)  # its warnings and errors

    def best(self) -> StepResult | None:
        """The highest concurrency that passed."""
        passed = [s for s in self.steps if s.passed]
        return max(passed, key=lambda s: s.calls) if passed else None


@dataclass(slots=True)
class SoakResult:
    calls: int
    windows: list[StepResult]
    placed: int  # calls placed during the soak
    recorded: int  # of them, with their record in the store afterwards
    server_log: list[str] = field(default_factory=list)

    @property
    def warm_up(self) -> int:
        """Windows of warm-up: the first fifth (2 minutes of 10)."""
        return max(1, len(self.windows) // 5)

    def rss_growth(self) -> float:
        """RSS growth from the end of the warm-up to the end of the soak."""
        if len(self.windows) <= self.warm_up:
            return 0.0
        first = self.windows[self.warm_up - 1].rss_mb
        return (self.windows[-1].rss_mb - first) / first

    def markdown(self, command: str) -> str:
        windows = self.windows
        lost = sum(w.lost + w.duplicated + w.reordered for w in windows)
        p99s = [w.p99_ms for w in windows]
        cpu = [w.cpu_ms_per_call_s for w in windows]
        lines = [
            "### Soak", "",
            f"`{command}`: {self.calls} concurrent calls for "
            f"{sum(w.window_s for w in windows) / 60:.0f} minutes (each call replaced after "
            "its length), measured in windows.", "",
            "| window | calls | CPU ms / call-s | RSS MB | relay p50 ms | relay p99 ms | "
            "relay max ms | lost / dup / reord | gaps | gen. lag p99 ms |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {n + 1} | {w.calls} | {w.cpu_ms_per_call_s:.2f} | {w.rss_mb:.0f} | "
                  f"{w.p50_ms:.1f} | {w.p99_ms:.1f} | {w.max_ms:.0f} | {w.lost} / "
                  f"{w.duplicated} / {w.reordered} | {w.gaps} | {w.lag_p99_ms:.1f} |"
                  for n, w in enumerate(windows)]
        lines += ["",
                  f"- RSS growth after the warm-up (the first {self.warm_up} windows): "
                  f"{self.rss_growth():+.1%} ({windows[self.warm_up - 1].rss_mb:.0f} → "
                  f"{windows[-1].rss_mb:.0f} MB; {windows[0].rss_mb:.0f} MB after the first)",
                  f"- frames lost, duplicated or reordered: {lost}",
                  f"- relay p99 per window: {min(p99s):.1f}–{max(p99s):.1f} ms; CPU per "
                  f"call-second {min(cpu):.2f}–{max(cpu):.2f} ms",
                  f"- records: {self.recorded} of {self.placed} calls placed have their "
                  f"record in the store ({self.placed - self.recorded} lost)",
                  "- the server's log: " + ("; ".join(f"`{x}`" for x in self.server_log[:5])
                                            if self.server_log else "no warning, no error")]
        return "\n".join(lines) + "\n"


def _log_problems(path: Path) -> list[str]:
    """The server's warning and error lines, counted by message (ids left out)."""
    counts: dict[str, int] = {}
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            if "WARNING" in line or "ERROR" in line:
                key = re.sub(r"\b(CA|MZ)[0-9a-f]{32}\b|\d+", "#", line)[:160]
                counts[key] = counts.get(key, 0) + 1
    return [f"{n} × {key}" for key, n in sorted(counts.items(), key=lambda kv: -kv[1])]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, kernel) CPU seconds of `pid` so far: utime and stime in /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def _proc_cpu_s(pid: int) -> float:
    return sum(_proc_cpu_split(pid))


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _pinned(core: str, nice: int = 0) -> list[str]:
    prefix = ["taskset", "-c", core] if shutil.which("taskset") else []
    if nice and (nice > 0 or os.geteuid() == 0):
        prefix = ["nice", "-n", str(nice), *prefix]
    return prefix


def _percentile(buckets: dict[int, int], q: float, width: float) -> float:
    total = sum(buckets.values())
    if not total:
        return 0.0
    rank = q / 100 * total
    seen = 0
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= rank:
            return (index + 1) * width
    return (max(buckets) + 1) * width


class _Generator:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(orjson.dumps(command) + b"\n")
        stdin.flush()
        return self.read(stdout)

    @staticmethod
    def read(stdout: IO[bytes]) -> dict[str, Any]:
        line = stdout.readline()
        if not line:
            raise RuntimeError("a load generator exited")
        answer: dict[str, Any] = orjson.loads(line)
        return answer


class CapacityBench:
    """The server, the generators and the steps (`run()`)."""

    def __init__(self, config: CapacityConfig, console: Console | None = None) -> None:
        self.config = config
        self.console = console or Console()
        self._server: subprocess.Popen[bytes] | None = None
        self._generators: list[_Generator] = []
        self.profile: Profile | None = None

    def run(self) -> CapacityRun:
        with tempfile.TemporaryDirectory(prefix="hotline-bench-capacity-") as tmp:
            try:
                url = self._start_server(Path(tmp))
                idle_rss = _proc_rss_mb(self._server_pid)
                self._start_generators(url)
                run = CapacityRun(self.config, self._steps(idle_rss), self.profile)
            finally:
                self._stop()
            run.server_log = _log_problems(Path(tmp) / "server.log")
            return run

    def soak(self, calls: int, minutes: float) -> SoakResult:
        """`calls` calls held for `minutes` (each replaced after `call_s`), measured in
        windows; then every call placed must have its record in the store."""
        with tempfile.TemporaryDirectory(prefix="hotline-bench-soak-") as tmp:
            try:
                url = self._start_server(Path(tmp))
                idle_rss = _proc_rss_mb(self._server_pid)
                self._start_generators(url)
                self._hold(calls)
                windows: list[StepResult] = []
                count = max(1, round(minutes * 60 / self.config.window_s))
                progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                    TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                                    TimeElapsedColumn(), console=self.console)
                with progress:
                    task = progress.add_task(f"soak, {calls} calls",
                                             total=count * self.config.window_s)
                    for _ in range(count):
                        windows.append(self._measure(calls, idle_rss, progress, task))
                self._hold(0)
                placed = sum(g.ask({"report": 1})["placed"] for g in self._generators)
                recorded = self._records(Path(tmp) / "bench.db", placed)
                result = SoakResult(calls, windows, placed, recorded)
            finally:
                self._stop()
            result.server_log = _log_problems(Path(tmp) / "server.log")
            return result

    def _records(self, database: Path, placed: int, timeout_s: float = 60) -> int:
        """Calls with their record written (all of them, once the server has caught up)."""
        deadline = time.monotonic() + timeout_s
        count = 0
        while time.monotonic() < deadline:
            with contextlib.closing(sqlite3.connect(database)) as db:
                count = int(db.execute("SELECT count(*) FROM calls WHERE outcome IS NOT NULL"
                                       ).fetchone()[0])
            if count >= placed:
                break
            time.sleep(0.5)
        return count

    @property
    def _server_pid(self) -> int:
        assert self._server is not None
        return self._server.pid

    def _start_server(self, workdir: Path) -> str:
        database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"

        async def prepare() -> None:
            store = Store(database_url)
            await store.upgrade()
            await store.save_business(bench_business(0))
            await store.close()

        asyncio.run(prepare())
        port = self._engine_port = _free_port()
        server_port = _free_port()
        url = f"http://127.0.0.1:{server_port}"
        env = {**os.environ, "HOTLINE_DATABASE_URL": database_url,
               "HOTLINE_OPENAI_API_KEY": OPENAI_KEY,
               "HOTLINE_OPENAI_REALTIME_URL": f"ws://127.0.0.1:{port}/v1",
               "HOTLINE_TWILIO_ACCOUNT_SID": ACCOUNT_SID, "HOTLINE_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
               "HOTLINE_JOURNAL_PATH": str(workdir / "journal.jsonl"),
               "HOTLINE_DATA_DIR": str(workdir / "data"), "HOTLINE_GREETING_CACHE": "false",
               "HOTLINE_LOG_LEVEL": "WARNING", "HOTLINE_PUBLIC_URL": url}
        for name in ("HOTLINE_REDIS_URL", "HOTLINE_API_TOKEN"):
            env.pop(name, None)
        if self.config.server_src:
            env["PYTHONPATH"] = self.config.server_src
        env.update(self.config.server_env)
        program = ("from hotline.benchmarks.capacity_floor import floor_main; floor_main()"
                   if self.config.server is ServerKind.FLOOR
                   else "from hotline.cli import main; main()")
        arguments = ([] if self.config.server is ServerKind.FLOOR
                     else ["serve", "--host", "127.0.0.1"])
        self._server = subprocess.Popen(
            [*_pinned(str(self.config.server_core), self.config.nice), sys.executable, "-c",
             program, *arguments, "--port", str(server_port)],
            env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=open(  # noqa: SIM115
                workdir / "server.log", "wb"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise RuntimeError(f"{self.config.server} server exited: "
                                   + (workdir / "server.log").read_text()[-2000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    # The server's own python: its pid is the one taskset exec'd.
                    return url
            time.sleep(0.2)
        raise RuntimeError(f"{self.config.server} server did not answer /healthz within 60 s")

    def _start_generators(self, url: str) -> None:
        cores = os.cpu_count() or 2
        others = ",".join(str(c) for c in range(cores) if c != self.config.server_core)
        for index in range(self.config.generators):
            config = {"index": index, "engine_port": self._engine_port, "server_url": url,
                      "call_s": self.config.call_s,
                      "auth_token": AUTH_TOKEN, "account_sid": ACCOUNT_SID,
                      "to": lane_number(0), "delta_ms": self.config.delta_ms,
                      "turn_every_s": self.config.turn_every_s}
            process = subprocess.Popen(
                [*(_pinned(others, self.config.nice) if others else []), sys.executable, "-c",
                 "from hotline.benchmarks.capacity_generator import generator_main; "
                 "generator_main()", orjson.dumps(config).decode()],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            generator = _Generator(process)
            assert process.stdout is not None
            if not generator.read(process.stdout).get("ready"):
                raise RuntimeError("a load generator did not start")
            self._generators.append(generator)

    def _steps(self, idle_rss: float) -> list[StepResult]:
        config = self.config
        results: list[StepResult] = []
        progress = Progress(TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                            TimeElapsedColumn(), console=self.console)
        per_step = config.settle_s + config.window_s
        with progress:
            task = progress.add_task("capacity", total=per_step * len(config.steps))
            for number, calls in enumerate(config.steps):
                progress.update(task, description=f"{calls} calls: ramping",
                                completed=number * per_step)
                self._hold(calls)
                progress.update(task, description=f"{calls} calls: settling")
                time.sleep(config.settle_s)
                progress.advance(task, config.settle_s)
                progress.update(task, description=f"{calls} calls: measuring")
                step = self._measure(calls, idle_rss, progress, task)
                results.append(step)
                self.console.print(_step_line(step))
                if config.stop_on_fail and not step.passed and not step.generator_limited:
                    break
        self._hold(0)
        return results

    def _hold(self, calls: int) -> None:
        """Ask for `calls` calls, shared among the generators, and wait until they are up."""
        count = len(self._generators)
        for index, generator in enumerate(self._generators):
            generator.ask({"calls": calls // count + (1 if index < calls % count else 0)})
        deadline = time.monotonic() + 30 + calls / 20
        up = 0
        while time.monotonic() < deadline:
            reports = [g.ask({"report": 1}) for g in self._generators]
            up = sum(r["calls"] for r in reports)
            if up == calls and not any(r["placing"] for r in reports):
                return
            time.sleep(0.25)
        self.console.print(f"[yellow]only {up} of {calls} calls up[/yellow]")

    def _measure(self, calls: int, idle_rss: float, progress: Progress,
                 task: Any) -> StepResult:
        pid = self._server_pid
        generator_cpu = [_proc_cpu_s(g.process.pid) for g in self._generators]
        for generator in self._generators:
            generator.ask({"reset": 1})
        (user0, kernel0), started = _proc_cpu_split(pid), time.monotonic()
        window = self.config.window_s
        spy = (start_profiler(pid, window) if calls == self.config.profile_at else None)
        while (left := started + window - time.monotonic()) > 0:
            time.sleep(min(0.5, left))
            progress.advance(task, min(0.5, left))
        (user1, kernel1), elapsed = _proc_cpu_split(pid), time.monotonic() - started
        if spy is not None:
            self.profile = finish_profiler(*spy, calls=calls)
        reports = [g.ask({"report": 1}) for g in self._generators]
        generator_cpu = [_proc_cpu_s(g.process.pid) - before
                         for g, before in zip(self._generators, generator_cpu, strict=True)]
        delays: dict[int, int] = {}
        lags: dict[int, int] = {}
        for report in reports:
            for key, n in report["delays"].items():
                delays[int(key)] = delays.get(int(key), 0) + n
            for key, n in report["lags"].items():
                lags[int(key)] = lags.get(int(key), 0) + n
        total = {key: sum(r[key] for r in reports) for key in (
            "frames", "lost", "duplicated", "reordered", "gaps", "marks_echoed", "clears",
            "turns", "truncates_past_audio", "engine_errors", "untagged")}
        cores = max(1, (os.cpu_count() or 2) - 1)
        return StepResult(
            calls=sum(r["calls"] for r in reports), window_s=elapsed,
            server_cpu_s=user1 + kernel1 - user0 - kernel0, server_kernel_s=kernel1 - kernel0,
            messages=sum(r["messages"] for r in reports), generator_cpu_s=sum(generator_cpu),
            rss_mb=_proc_rss_mb(pid), idle_rss_mb=idle_rss,
            frames=total["frames"], lost=total["lost"], duplicated=total["duplicated"],
            reordered=total["reordered"], gaps=total["gaps"],
            max_gap_ms=max(r["max_gap_ms"] for r in reports),
            p50_ms=_percentile(delays, 50, DELAY_BUCKET_MS),
            p99_ms=_percentile(delays, 99, DELAY_BUCKET_MS),
            max_ms=max(r["delay_max_ms"] for r in reports),
            lag_p99_ms=_percentile(lags, 99, 1.0) - 1.0,
            lag_max_ms=max(r["lag_max_ms"] for r in reports),
            generator_cpu=sum(generator_cpu) / elapsed / min(cores, len(self._generators)),
            marks=total["marks_echoed"], clears=total["clears"], turns=total["turns"],
            truncates_past_audio=total["truncates_past_audio"],
            engine_errors=total["engine_errors"],
            failures=[f for r in reports for f in r["failures"]][:5],
            load_average=os.getloadavg()[0], untagged=total["untagged"])

    def _stop(self) -> None:
        for generator in self._generators:
            with contextlib.suppress(Exception):
                generator.ask({"exit": 1})
        for generator in self._generators:
            try:
                generator.process.wait(10)
            except subprocess.TimeoutExpired:
                generator.process.kill()
        if self._server is not None and self._server.poll() is None:
            self._server.send_signal(signal.SIGTERM)
            try:
                self._server.wait(30)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()


def _step_line(step: StepResult) -> str:
    verdict = "[green]pass[/green]" if step.passed else "[red]FAIL[/red]"
    note = " (load generator limited)" if step.generator_limited else ""
    failures = f"; {step.failures[0]}" if step.failures else ""
    return (f"{step.calls} calls: {step.cpu_ms_per_call_s:.2f} ms CPU/call-s "
            f"(≈{step.calls_per_core:.0f} calls/core; {step.messages_per_call_s:.0f} msgs/call-s, "
            f"{step.us_per_message:.1f} µs/msg, {step.kernel_share:.0%} kernel), "
            f"server CPU {step.server_cpu:.0%}, "
            f"relay p50 {step.p50_ms:.1f} / p99 {step.p99_ms:.1f} / max {step.max_ms:.0f} ms, "
            f"lost {step.lost}, gaps {step.gaps}, {step.mb_per_call:.2f} MB/call, "
            f"generator lag p99 {step.lag_p99_ms:.1f} ms CPU {step.generator_cpu:.0%}: "
            f"{verdict}{note}{failures}")


COLUMNS = ("calls", "CPU ms / call-s", "calls / core", "msgs / call-s", "CPU µs / msg",
           "kernel share", "gen. µs / msg", "server CPU", "RSS MB", "MB / call",
           "relay p50 ms", "relay p99 ms", "relay max ms", "lost / dup / reord", "gaps",
           "barge-ins", "gen. lag p99 ms", "gen. CPU", "load avg", "result", "limit")


def step_row(step: StepResult) -> tuple[str, ...]:
    return (str(step.calls), f"{step.cpu_ms_per_call_s:.2f}", f"{step.calls_per_core:.0f}",
            f"{step.messages_per_call_s:.0f}", f"{step.us_per_message:.1f}",
            f"{step.kernel_share:.0%}", f"{step.generator_us_per_message:.1f}",
            f"{step.server_cpu:.0%}", f"{step.rss_mb:.0f}",
            f"{step.mb_per_call:.2f}",
            f"{step.p50_ms:.1f}", f"{step.p99_ms:.1f}", f"{step.max_ms:.0f}",
            f"{step.lost} / {step.duplicated} / {step.reordered}", str(step.gaps),
            str(step.clears), f"{step.lag_p99_ms:.1f}", f"{step.generator_cpu:.0%}",
            f"{step.load_average:.1f}", "pass" if step.passed else "FAIL", step.limit)


def verdict(run: CapacityRun) -> str:
    best = run.best()
    if best is None:
        return "no step passed (p99 relay ≤ 10 ms, no frame lost)"
    limited = any(s.generator_limited for s in run.steps)
    return (f"highest concurrency passing (p99 relay ≤ {P99_TARGET_MS:.0f} ms, 0 lost): "
            f"**{best.calls} calls**; there {best.cpu_ms_per_call_s:.2f} ms CPU per "
            f"call-second = **{best.calls_per_core:.0f} calls per core**, "
            f"{best.mb_per_call:.2f} MB per call"
            + ("; the load generator, not the server, was the limit at some step"
               if limited else ""))


def print_run(run: CapacityRun, console: Console) -> None:
    floor = " (the floor relay, not Hotline)" if run.config.server is ServerKind.FLOOR else ""
    table = Table(title=f"Capacity, {run.config.delta_ms} ms engine deltas{floor}")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    for step in run.steps:
        table.add_row(*step_row(step))
    console.print(table)
    console.print(verdict(run).replace("**", ""))


def markdown_table(run: CapacityRun) -> str:
    lines = [f"| {' | '.join(COLUMNS)} |", "|" + "---:|" * len(COLUMNS)]
    lines += [f"| {' | '.join(step_row(s))} |" for s in run.steps]
    return "\n".join(lines)


def server_description(config: CapacityConfig) -> str:
    if config.server is ServerKind.FLOOR:
        return ("The server measured is the FLOOR RELAY, not Hotline "
                "(`hotline.benchmarks.capacity_floor`: the leanest Python relay of this "
                "traffic, uvloop protocols and the benchmark's own WebSocket layer, no "
                "parse of media, no store, no signature checks, no logging)")
    return ("One `hotline serve` process (SQLite store, greeting cache off: every agent "
            "frame comes from the engine)")


def markdown(runs: list[CapacityRun], command: str, extra: str = "") -> str:
    config = runs[0].config
    floor = config.server is ServerKind.FLOOR
    lines = [
        "## `hotline bench capacity" + (" --floor`: the floor relay (NOT Hotline)"
                                        if floor else "`")
        + "".join(f" with `{name}={value}`" for name, value in config.server_env)
        + ": concurrent full-duplex calls on one core", "",
        "Generated by `hotline bench capacity`.", "",
        f"- Run: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, `{command}`; "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores (shared, noisy)",
        f"- {server_description(config)}, pinned to core {config.server_core} (`taskset`"
        + (f", `nice -n {config.nice}` so that other work on this shared machine does not "
           "starve it or the generators" if config.nice else "") + ")"
        + "".join(f", `{name}={value}`" for name, value in config.server_env) + ". "
        f"{config.generators} load generators on the other core(s), each a lean engine "
        "(the Realtime protocol over real WebSockets) and lean phones (signed webhook, "
        "then Media Streams) for its share of the calls.",
        "- Each call is full duplex for its whole length: caller frames at 50/s, engine "
        "deltas in real time, every mark echoed once its audio has played, and a caller "
        f"turn (600 ms of voice) every {config.turn_every_s:g} s, which barges in on the "
        "agent (clear, truncate, cancel) and gets a new reply.",
        f"- Each step: calls ramped up, {config.settle_s:g} s to settle, then a "
        f"{config.window_s:g} s window. Server CPU = utime + stime of its pid in "
        "/proc over the window (kernel share: stime's part); RSS from /proc; MB per call = "
        "(RSS − idle RSS) ÷ calls. Messages: the WebSocket messages the server received or "
        "sent on both sockets (counted by the generators, the other end of every one); CPU "
        "µs per message = server CPU ÷ messages, all its work included; gen. µs per message: "
        "the same for the generators (pre-framed writes, no WebSocket library: what a lean "
        "layer costs on these messages). "
        "Relay delay: the engine sent a delta → the phone received its media frame (a tag "
        "in the audio). Gaps: a frame later than its audio length + 40 ms. A step passes "
        f"with p99 relay ≤ {P99_TARGET_MS:.0f} ms and no frame lost, duplicated or reordered. "
        f"Generator lag: how late their 20 ms clock ran (> {LAG_LIMIT_MS:.0f} ms p99, or "
        f"their CPU ≥ {GENERATOR_CPU_LIMIT:.0%}: the harness is the limit).", ""]
    for run in runs:
        lines += [f"### {run.config.delta_ms} ms engine deltas", "", markdown_table(run), "",
                  f"- {verdict(run)}",
                  "- the server's log: " + ("; ".join(f"`{x}`" for x in run.server_log[:5])
                                            if run.server_log else "no warning, no error"),
                  ""]
        if run.profile is not None:
            lines += [run.profile.markdown(f"Server profile, {run.config.delta_ms} ms deltas"),
                      ""]
    return "\n".join(lines) + ("\n" + extra.strip() + "\n" if extra.strip() else "")


def bench_capacity(configs: list[CapacityConfig], console: Console, command: str,
                   output: Path | None, extra: str = "",
                   section: str = SECTION) -> list[CapacityRun]:
    runs = []
    for config in configs:
        console.print(f"[bold]{config.delta_ms} ms engine deltas[/bold]")
        console.print(server_description(config), markup=False)
        run = CapacityBench(config, console).run()
        print_run(run, console)
        for line in run.server_log[:8]:
            console.print(f"server log: {line}", markup=False)
        if run.profile is not None:
            console.print(run.profile.markdown("Server profile"))
        runs.append(run)
    if output is not None:
        write_section(output, section, markdown(runs, command, extra))
        console.print(f"written: {output}")
    return runs


def bench_soak(config: CapacityConfig, calls: int, minutes: float, console: Console,
               command: str, output: Path | None) -> SoakResult:
    result = CapacityBench(config, console).soak(calls, minutes)
    text = result.markdown(command)
    console.print(text)
    if output is not None:
        write_section(output, SOAK_SECTION, text)
        console.print(f"written: {output}")
    return result
