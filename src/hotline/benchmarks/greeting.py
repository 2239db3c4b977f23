"""`hotline bench greeting`: how soon the caller hears the greeting, strategy by strategy.

One run plays N inbound calls (default 50) at concurrency C (default 10) against a fresh
Hotline server per strategy, for each engine latency profile, and reports, as the simulated
phone measured them from outside:

(a) webhook → TwiML          `PhoneCallResult.webhook_to_twiml_ms`
(b) stream `start` → first   `PhoneCallResult.start_to_first_media_ms`
    greeting frame
(c) our own overhead         (b) minus the engine's own time on the path, from the engine
                             simulator's records of that call's session (see
                             `engine_intervals`, `analyse`); (b) itself when the greeting
                             came from the greeting cache (no engine on the path).

Strategies (server settings, nothing else differs):

    naive         connect at `start`, full prompt, then ask for the greeting
    seed          compact prompt built in the webhook, connect at `start`, greet with the
                  compact prompt, upgrade to the full prompt after the greeting
    hotline-warm  the engine session is prepared by the webhook; live greeting (compact)
    hotline       warm session + the greeting pre-rendered and played from memory

The server (uvicorn on a free port) runs in this process; the realtime engine simulator and
the simulated phone run together in a child process (`ProcessSimulators`), or on the
same event loop as the server (`LocalSimulators`: the tests, `--same-process`). All traffic
goes over real loopback sockets. The phone paces its media at real time. Each call listens
to the first 300 ms of the greeting, then hangs up.

How calls are matched to engine sessions: `hotline.benchmarks.samples`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from hotline.benchmarks.calls import (
    DEFAULT_RAMP_MS,
    LISTEN_MS,
    LocalSimulators,
    PlayRequest,
    Simulators,
)
from hotline.benchmarks.report import print_report, raw_samples, render_markdown
from hotline.benchmarks.samples import CallSample, StrategyRun, analyse, match_sessions
from hotline.benchmarks.server import ErrorLog, GcWatch, greetings_ready, server_settings
from hotline.benchmarks.simulator_process import ProcessSimulators, run_with_loop
from hotline.benchmarks.stats import BenchResult
from hotline.benchmarks.strategies import PROFILES, STRATEGIES, Strategy, missing_settings
from hotline.benchmarks.tenants import bench_business, prompt_sizes
from hotline.server import RunningServer, start_server
from hotline.sim.engine import LatencyProfile
from hotline.store.database import Store

DEFAULT_CALLS = 50
DEFAULT_CONCURRENCY = 10
DEFAULT_OUTPUT = Path("docs/benchmarks.md")


async def run_strategy(strategy: Strategy, profile_name: str, *, calls: int, concurrency: int,
                       workdir: Path, profile: LatencyProfile | None = None,
                       listen_ms: int = LISTEN_MS, stream_gap_ms: float = 0.0,
                       ramp_ms: float = 0.0, simulators: Simulators | None = None,
                       on_call: Callable[[], None] | None = None) -> StrategyRun:
    """A fresh server (fresh SQLite store, fresh greeting cache) for this strategy: one
    untimed warm-up call per lane, then `calls` measured calls, `concurrency` at a time.

    `simulators`: where the engine and the phone run (default: on this event loop).
    `ramp_ms`: the first `concurrency` measured calls start this far apart, so that the
    lanes (whose calls all last about as long) do not stay in lockstep.
    `stream_gap_ms`: Twilio's time between the TwiML and the stream (`TwilioStreamGap`);
    0 (the simulated phone's own behaviour: it opens the stream at once) unless asked."""
    profile = profile or PROFILES[profile_name]()
    sims: Simulators = simulators or LocalSimulators()
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    lanes = max(1, min(concurrency, calls))
    businesses = [bench_business(lane) for lane in range(lanes)]
    numbers = tuple(b.phone_numbers[0] for b in businesses)
    database_url = f"sqlite+aiosqlite:///{workdir / 'hotline.db'}"
    store = Store(database_url)
    await store.upgrade()
    for business in businesses:
        await store.save_business(business)
    await store.close()

    engine_url = await sims.start(profile)
    server: RunningServer | None = None
    began = time.monotonic()
    try:
        server = await start_server(server_settings(strategy, workdir=workdir,
                                                    database_url=database_url,
                                                    engine_url=engine_url))
        if strategy.greeting_cache:
            await greetings_ready(server, businesses)
        request = PlayRequest(server.url, numbers, calls=lanes, concurrency=lanes, warmup=True,
                              listen_ms=listen_ms, stream_gap_ms=stream_gap_ms)
        warmup_calls = await sims.play(request)
        played = await sims.play(dataclasses.replace(request, calls=calls,
                                                     concurrency=concurrency, warmup=False,
                                                     ramp_ms=ramp_ms), on_call)
    finally:
        if server is not None:
            await server.stop()
        sessions = await sims.sessions()
        await sims.stop()
    wall_s = time.monotonic() - began
    warmups = [CallSample(c.index, c.lane, c.phone, twiml_arrived_at=c.twiml_arrived_at)
               for c in warmup_calls]
    samples = [CallSample(c.index, c.lane, c.phone, twiml_arrived_at=c.twiml_arrived_at)
               for c in played]
    match_sessions([*warmups, *samples], sessions, profile)
    for sample in [*warmups, *samples]:
        analyse(sample, profile, strategy)
    compact_chars, full_chars = prompt_sizes(businesses[0])
    return StrategyRun(strategy, profile_name, profile, samples, warmups, sessions,
                       compact_chars, full_chars, wall_s)


async def run_benchmark(*, calls: int = DEFAULT_CALLS, concurrency: int = DEFAULT_CONCURRENCY,
                        profiles: Sequence[str] = ("zero", "modeled"),
                        strategies: Sequence[str] = tuple(STRATEGIES),
                        workdir: Path | None = None, stream_gap_ms: float = 0.0,
                        ramp_ms: float = DEFAULT_RAMP_MS, same_process: bool = False,
                        loop: str = "uvloop",
                        progress: Progress | None = None) -> BenchResult:
    """Every strategy on every profile. The simulators run in a child process unless
    `same_process`."""
    result = BenchResult(calls, concurrency, list(profiles), list(strategies),
                         datetime.datetime.now(datetime.UTC), stream_gap_ms=stream_gap_ms,
                         same_process=same_process, ramp_ms=ramp_ms)
    began = time.monotonic()
    overall = None
    if progress is not None:
        overall = progress.add_task("greeting benchmark",
                                    total=calls * len(profiles) * len(strategies))

    def advance() -> None:
        if progress is not None and overall is not None:
            progress.advance(overall)

    async with contextlib.AsyncExitStack() as stack:
        result.gc_pauses = stack.enter_context(GcWatch()).pauses
        sims: Simulators = LocalSimulators()
        if not same_process:
            sims = await stack.enter_async_context(ProcessSimulators(loop))
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="hotline-bench-"))
        root = workdir or Path(scratch)
        for profile_name in profiles:
            for name in strategies:
                if progress is not None and overall is not None:
                    progress.update(overall, description=f"{profile_name:>7} · {name:<12}")
                result.runs[(profile_name, name)] = await run_strategy(
                    STRATEGIES[name], profile_name, calls=calls, concurrency=concurrency,
                    workdir=root / f"{profile_name}-{name}", stream_gap_ms=stream_gap_ms,
                    ramp_ms=ramp_ms, simulators=sims, on_call=advance)
    result.wall_s = time.monotonic() - began
    return result


def make_progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("calls"), TimeElapsedColumn(), console=console,
                    refresh_per_second=4)


def bench_greeting(*, calls: int = DEFAULT_CALLS, concurrency: int = DEFAULT_CONCURRENCY,
                   profiles: Sequence[str] = ("zero", "modeled"),
                   strategies: Sequence[str] = tuple(STRATEGIES),
                   output: Path | None = DEFAULT_OUTPUT, console: Console | None = None,
                   stream_gap_ms: float = 0.0, ramp_ms: float = DEFAULT_RAMP_MS,
                   same_process: bool = False,
                   loop: str = "uvloop", command: str = "hotline bench greeting",
                   show_log: bool = False, raw_output: Path | None = None) -> BenchResult:
    """Run the benchmark with a progress bar, print the tables, write the markdown.

    Errors logged in this process (the server's) are counted in the report; `show_log`
    also leaves them, and the rest of the log, on the terminal."""
    console = console or Console()
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {', '.join(unknown)}; choose from "
                         f"{', '.join(STRATEGIES)}")
    for profile in profiles:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile}; choose from {', '.join(PROFILES)}")
    for name in strategies:
        missing = missing_settings(STRATEGIES[name])
        if missing:
            raise RuntimeError(f"this Hotline has no setting {', '.join(missing)}: strategy "
                               f"{name!r} cannot be configured")
    errors = ErrorLog()
    root = logging.getLogger()
    kept = list(root.handlers)
    if not show_log:
        for handler in kept:  # the progress bar owns the terminal; errors go in the report
            root.removeHandler(handler)
    root.addHandler(errors)
    try:
        with make_progress(console) as progress:
            result = run_with_loop(lambda: run_benchmark(
                calls=calls, concurrency=concurrency, profiles=profiles, strategies=strategies,
                stream_gap_ms=stream_gap_ms, ramp_ms=ramp_ms, same_process=same_process,
                loop=loop, progress=progress), loop=loop)
    finally:
        root.removeHandler(errors)
        for handler in kept:
            if handler not in root.handlers:
                root.addHandler(handler)
    result.server_errors = errors.summaries
    print_report(result, console)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(render_markdown(result, command=command), encoding="utf-8")
        console.print(f"written: {output}")
    if raw_output is not None:
        raw_output.parent.mkdir(parents=True, exist_ok=True)
        raw_output.write_text(json.dumps(raw_samples(result), indent=1) + "\n",
                              encoding="utf-8")
        console.print(f"written: {raw_output}")
    return result
