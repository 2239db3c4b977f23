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
from dataclasses import dataclass
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
    DEFAULT_AMD_MS,
    DEFAULT_RAMP_MS,
    DIRECTIONS,
    INBOUND,
    LISTEN_MS,
    OUTBOUND,
    VOICEMAIL,
    LocalSimulators,
    PlayedCall,
    PlayRequest,
    Simulators,
)
from hotline.benchmarks.doc_sections import write_section
from hotline.benchmarks.report import print_report, raw_samples, render_markdown
from hotline.benchmarks.samples import (
    CallSample,
    RenderWait,
    StrategyRun,
    analyse,
    match_sessions,
    voicemail_problem,
)
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
DEFAULT_VOICEMAIL_CALLS = 10
DEFAULT_OUTPUT = Path("docs/benchmarks.md")
SECTION = "greeting"  # its section of DEFAULT_OUTPUT


@dataclass(slots=True)
class ServerRun:
    """One fresh server for one strategy on one profile, and its calls by direction."""

    render: RenderWait | None
    runs: dict[str, StrategyRun]


async def run_server(strategy: Strategy, profile_name: str, *, calls: int, concurrency: int,
                     workdir: Path, profile: LatencyProfile | None = None,
                     directions: Sequence[str] = (INBOUND,), voicemail_calls: int = 0,
                     listen_ms: int = LISTEN_MS, stream_gap_ms: float = 0.0,
                     ramp_ms: float = 0.0, amd_ms: int = DEFAULT_AMD_MS,
                     simulators: Simulators | None = None,
                     on_call: Callable[[], None] | None = None) -> ServerRun:
    """A fresh server (fresh SQLite store, fresh greeting cache) for this strategy; with the
    greeting cache, wait until it holds every greeting the calls need (`RenderWait`). Then,
    per direction in `directions` (inbound, outbound, voicemail, in that order): one untimed
    warm-up call per lane (none for voicemail), then `calls` measured calls (voicemail:
    `voicemail_calls`), `concurrency` at a time.

    `simulators`: where the engine, the Twilio API and the phone run (default: this loop).
    `ramp_ms`: the first `concurrency` measured calls start this far apart, so that the
    lanes (whose calls all last about as long) do not stay in lockstep.
    `stream_gap_ms`: Twilio's time between the TwiML and the stream (`TwilioStreamGap`,
    inbound only); 0 (the simulated phone's own behaviour: it opens the stream at once)
    unless asked. `amd_ms`: the human verdict's delay after the callee picks up."""
    profile = profile or PROFILES[profile_name]()
    sims: Simulators = simulators or LocalSimulators()
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    wanted = [d for d in DIRECTIONS if d in directions]
    lanes = max(1, min(concurrency, max(calls, voicemail_calls if VOICEMAIL in wanted else 0)))
    businesses = [bench_business(lane) for lane in range(lanes)]
    numbers = tuple(b.phone_numbers[0] for b in businesses)
    slugs = tuple(b.slug for b in businesses)
    database_url = f"sqlite+aiosqlite:///{workdir / 'hotline.db'}"
    store = Store(database_url)
    await store.upgrade()
    for business in businesses:
        await store.save_business(business)
    await store.close()

    urls = await sims.start(profile)
    server: RunningServer | None = None
    render: RenderWait | None = None
    played: dict[str, tuple[list[PlayedCall], list[PlayedCall], float]] = {}
    try:
        starting = time.monotonic()
        server = await start_server(server_settings(strategy, workdir=workdir,
                                                    database_url=database_url,
                                                    engine_url=urls.engine,
                                                    twilio_api_url=urls.twilio))
        started = time.monotonic()
        if strategy.greeting_cache:
            greetings = await greetings_ready(
                server, businesses, outbound=OUTBOUND in wanted or VOICEMAIL in wanted)
            render = RenderWait(greetings, server.services.greetings.rendered,
                                started - starting, time.monotonic() - started)
        for direction in wanted:
            began = time.monotonic()
            n = voicemail_calls if direction == VOICEMAIL else calls
            if n <= 0:
                continue
            c = min(concurrency, n)
            request = PlayRequest(server.url, numbers, calls=lanes, concurrency=lanes,
                                  warmup=True, listen_ms=listen_ms,
                                  stream_gap_ms=stream_gap_ms if direction == INBOUND else 0.0,
                                  direction=direction, slugs=slugs, amd_ms=amd_ms)
            warmups = [] if direction == VOICEMAIL else await sims.play(request)
            measured = await sims.play(dataclasses.replace(
                request, numbers=numbers[:c], calls=n, concurrency=c, warmup=False,
                ramp_ms=ramp_ms), on_call)
            played[direction] = (warmups, measured, time.monotonic() - began)
    finally:
        if server is not None:
            await server.stop()
        sessions = await sims.sessions()
        await sims.stop()

    def sample(c: PlayedCall) -> CallSample:
        return CallSample(c.index, c.lane, c.phone, twiml_arrived_at=c.twiml_arrived_at,
                          voicemail_media_at=c.voicemail_media_at)

    compact_chars, full_chars = prompt_sizes(businesses[0])
    runs: dict[str, StrategyRun] = {}
    everything: list[CallSample] = []
    for direction, (warmup_calls, measured, wall_s) in played.items():
        run = StrategyRun(strategy, profile_name, profile, [sample(c) for c in measured],
                          [sample(c) for c in warmup_calls], sessions, compact_chars,
                          full_chars, wall_s, direction=direction, render=render)
        runs[direction] = run
        everything += [*run.warmups, *run.samples]
    # Lanes carry calls of every direction in turn: match them to sessions together.
    match_sessions(everything, sessions, profile)
    for run in runs.values():
        for one in [*run.warmups, *run.samples]:
            if run.voicemail:
                one.problem = voicemail_problem(one)
            else:
                analyse(one, profile, strategy)
    return ServerRun(render, runs)


async def run_strategy(strategy: Strategy, profile_name: str, *, calls: int, concurrency: int,
                       workdir: Path, profile: LatencyProfile | None = None,
                       direction: str = INBOUND, listen_ms: int = LISTEN_MS,
                       stream_gap_ms: float = 0.0, ramp_ms: float = 0.0,
                       amd_ms: int = DEFAULT_AMD_MS, simulators: Simulators | None = None,
                       on_call: Callable[[], None] | None = None) -> StrategyRun:
    """`run_server` for one direction (`calls` calls of it)."""
    server_run = await run_server(
        strategy, profile_name, calls=calls if direction != VOICEMAIL else 0,
        voicemail_calls=calls if direction == VOICEMAIL else 0, concurrency=concurrency,
        workdir=workdir, profile=profile, directions=(direction,), listen_ms=listen_ms,
        stream_gap_ms=stream_gap_ms, ramp_ms=ramp_ms, amd_ms=amd_ms, simulators=simulators,
        on_call=on_call)
    return server_run.runs[direction]


async def run_benchmark(*, calls: int = DEFAULT_CALLS, concurrency: int = DEFAULT_CONCURRENCY,
                        profiles: Sequence[str] = ("zero", "modeled"),
                        strategies: Sequence[str] = tuple(STRATEGIES),
                        directions: Sequence[str] = DIRECTIONS,
                        voicemail_calls: int = DEFAULT_VOICEMAIL_CALLS,
                        workdir: Path | None = None, stream_gap_ms: float = 0.0,
                        ramp_ms: float = DEFAULT_RAMP_MS, amd_ms: int = DEFAULT_AMD_MS,
                        same_process: bool = False, loop: str = "uvloop",
                        progress: Progress | None = None) -> BenchResult:
    """Every strategy on every profile, one fresh server each, every direction on it. The
    simulators run in a child process unless `same_process`."""
    wanted = [d for d in DIRECTIONS if d in directions
              and (d != VOICEMAIL or voicemail_calls > 0)]
    result = BenchResult(calls, concurrency, list(profiles), list(strategies),
                         datetime.datetime.now(datetime.UTC), stream_gap_ms=stream_gap_ms,
                         same_process=same_process, ramp_ms=ramp_ms, directions=wanted,
                         voicemail_calls=voicemail_calls if VOICEMAIL in wanted else 0,
                         amd_ms=amd_ms)
    began = time.monotonic()
    overall = None
    per_server = sum(voicemail_calls if d == VOICEMAIL else calls for d in wanted)
    if progress is not None:
        overall = progress.add_task("greeting benchmark",
                                    total=per_server * len(profiles) * len(strategies))

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
                server_run = await run_server(
                    STRATEGIES[name], profile_name, calls=calls, concurrency=concurrency,
                    workdir=root / f"{profile_name}-{name}", directions=wanted,
                    voicemail_calls=voicemail_calls, stream_gap_ms=stream_gap_ms,
                    ramp_ms=ramp_ms, amd_ms=amd_ms, simulators=sims, on_call=advance)
                for direction, run in server_run.runs.items():
                    result.runs[(profile_name, name, direction)] = run
                if server_run.render is not None:
                    result.renders[(profile_name, name)] = server_run.render
    result.wall_s = time.monotonic() - began
    return result


def make_progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("calls"), TimeElapsedColumn(), console=console,
                    refresh_per_second=4)


def bench_greeting(*, calls: int = DEFAULT_CALLS, concurrency: int = DEFAULT_CONCURRENCY,
                   profiles: Sequence[str] = ("zero", "modeled"),
                   strategies: Sequence[str] = tuple(STRATEGIES),
                   directions: Sequence[str] = DIRECTIONS,
                   voicemail_calls: int = DEFAULT_VOICEMAIL_CALLS,
                   amd_ms: int = DEFAULT_AMD_MS,
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
                directions=directions, voicemail_calls=voicemail_calls, amd_ms=amd_ms,
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
        write_section(output, SECTION, render_markdown(result, command=command))
        console.print(f"written: {output}")
    if raw_output is not None:
        raw_output.parent.mkdir(parents=True, exist_ok=True)
        raw_output.write_text(json.dumps(raw_samples(result), indent=1) + "\n",
                              encoding="utf-8")
        console.print(f"written: {raw_output}")
    return result
