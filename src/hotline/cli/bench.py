"""`hotline bench …`: benchmarks against the simulators (results in docs/benchmarks.md).

The benchmark code is imported only when a benchmark runs, so `hotline --help` stays fast.
It lives in the package (`hotline.benchmarks`) because the installed `hotline` script
cannot import the repository's `bench/` directory; `python -m bench.greeting` runs the
same code from a checkout.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hotline.cli import app

if TYPE_CHECKING:  # the benchmarks load only when one runs
    from hotline.benchmarks.capacity import CapacityConfig

bench_app = typer.Typer(help="Benchmarks against the simulators, offline.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")

STRATEGY_NAMES = ("naive", "seed", "hotline-warm", "hotline")
PROFILE_CHOICES = {"zero": ("zero",), "modeled": ("modeled",), "both": ("zero", "modeled")}
# Outbound includes its voicemail case (an answering machine answers; --voicemail-calls).
DIRECTION_CHOICES = {"inbound": ("inbound",), "outbound": ("outbound", "voicemail"),
                     "both": ("inbound", "outbound", "voicemail")}


def _strategies(values: list[str] | None) -> list[str]:
    if not values:
        return list(STRATEGY_NAMES)
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in STRATEGY_NAMES]
    if unknown:
        raise typer.BadParameter(f"unknown {', '.join(unknown)}; choose from "
                                 f"{', '.join(STRATEGY_NAMES)}", param_hint="--strategies")
    return list(dict.fromkeys(names))


# Every benchmark writes its own section of the same report (hotline.benchmarks.doc_sections).
REPORT_OPTION = typer.Option(Path("docs/benchmarks.md"), "--output", "-o",
                             help="Markdown report to put the benchmark's section in.")
NO_REPORT_OPTION = typer.Option(False, "--no-output", help="Print only; write no report.")


@bench_app.command("greeting")
def greeting(
    calls: int = typer.Option(50, "--calls", "-n", min=1, help="Calls per strategy and profile."),
    concurrency: int = typer.Option(10, "--concurrency", "-c", min=1,
                                    help="Calls in flight at once."),
    profile: str = typer.Option("both", "--profile",
                                help="Engine latency profile: zero | modeled | both."),
    direction: str = typer.Option(
        "both", "--direction",
        help="Calls to measure: inbound | outbound | both. Outbound calls are placed through "
             "POST /api/calls and the simulated Twilio REST API (async AMD), and include the "
             "voicemail case."),
    voicemail_calls: int = typer.Option(
        10, "--voicemail-calls", min=0,
        help="Outbound calls answered by an answering machine, per strategy and profile "
             "(beep → first voicemail frame; 0: none)."),
    amd_ms: int = typer.Option(
        1500, "--amd-ms", min=0,
        help="Outbound: the AMD verdict `human` comes this long after the callee picks up."),
    strategies: list[str] | None = typer.Option(
        None, "--strategies", "-s",
        help="Strategies to run, comma-separated or repeated (default: naive, seed, "
             "hotline-warm, hotline)."),
    output: Path = REPORT_OPTION,
    no_output: bool = NO_REPORT_OPTION,
    raw: Path | None = typer.Option(None, "--raw", help="Also write every call's timings "
                                    "(JSON) here."),
    stream_gap_ms: float = typer.Option(
        0.0, "--stream-gap-ms", min=0,
        help="Twilio's time between the TwiML and opening the media stream (the simulated "
             "phone takes none)."),
    ramp_ms: float = typer.Option(
        25.0, "--ramp-ms", min=0,
        help="The first C calls start this far apart, so the concurrent calls do not run in "
             "lockstep (0: all at once)."),
    same_process: bool = typer.Option(
        False, "--same-process",
        help="Run the engine simulator and the phone on the server's event loop instead of "
             "in a child process."),
    loop: str = typer.Option("uvloop", "--loop", help="Event loop: uvloop | asyncio."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the server's log."),
) -> None:
    """Stream start → first greeting frame for naive, seed and Hotline's strategies, inbound
    and outbound, and an answering machine's beep → first voicemail frame."""
    if profile not in PROFILE_CHOICES:
        raise typer.BadParameter("choose zero, modeled or both", param_hint="--profile")
    if direction not in DIRECTION_CHOICES:
        raise typer.BadParameter("choose inbound, outbound or both", param_hint="--direction")
    if loop not in ("uvloop", "asyncio"):
        raise typer.BadParameter("choose uvloop or asyncio", param_hint="--loop")
    chosen = _strategies(strategies)

    from rich.console import Console

    from hotline.benchmarks.greeting import bench_greeting
    from hotline.logs import configure_logging

    configure_logging("INFO" if verbose else "WARNING")
    if not verbose:
        logging.getLogger("hotline.sim").setLevel(logging.ERROR)
    command = ["hotline", "bench", "greeting", "--calls", str(calls), "--concurrency",
               str(concurrency), "--profile", profile, "--direction", direction,
               "--strategies", ",".join(chosen)]
    if direction != "inbound" and voicemail_calls != 10:
        command += ["--voicemail-calls", str(voicemail_calls)]
    if direction != "inbound" and amd_ms != 1500:
        command += ["--amd-ms", str(amd_ms)]
    if stream_gap_ms:
        command += ["--stream-gap-ms", f"{stream_gap_ms:g}"]
    if ramp_ms != 25.0:
        command += ["--ramp-ms", f"{ramp_ms:g}"]
    if same_process:
        command.append("--same-process")
    if loop != "uvloop":
        command += ["--loop", loop]
    try:
        bench_greeting(calls=calls, concurrency=concurrency, profiles=PROFILE_CHOICES[profile],
                       strategies=chosen, directions=DIRECTION_CHOICES[direction],
                       voicemail_calls=voicemail_calls, amd_ms=amd_ms,
                       output=None if no_output else output,
                       stream_gap_ms=stream_gap_ms, ramp_ms=ramp_ms,
                       same_process=same_process,
                       console=Console(), loop=loop, command=shlex.join(command),
                       show_log=verbose, raw_output=raw)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@bench_app.command("apology")
def apology(
    calls: int = typer.Option(20, "--calls", "-n", min=1, help="Calls to measure."),
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1,
                                    help="Calls in flight at once."),
    output: Path = REPORT_OPTION,
    no_output: bool = NO_REPORT_OPTION,
    fault: str = typer.Option("refused", "--fault",
                              help="refused (connection refused) or hanging (the handshake "
                                   "never answers: the connect budget cuts it)."),
) -> None:
    """Engine unavailable: stream start → first apology frame at the phone, at real time."""
    import asyncio

    from hotline.benchmarks.apology import (
        EngineFault,
        bench_apology,
        render_section,
        section_name,
    )
    from hotline.benchmarks.doc_sections import write_section
    from hotline.logs import configure_logging

    try:
        engine_fault = EngineFault(fault)
    except ValueError as exc:
        raise typer.BadParameter(f"--fault must be one of: {', '.join(EngineFault)}") from exc
    configure_logging("CRITICAL")  # every call logs its refused engine connection
    result = asyncio.run(bench_apology(calls, concurrency, engine_fault))
    summary = result.summary()
    typer.echo(f"{len(result.samples)} calls, engine {engine_fault}: start → first apology frame "
               f"p50 {summary['p50']:.1f} ms, p95 {summary['p95']:.1f} ms, "
               f"max {summary['max']:.1f} ms")
    if not no_output:
        command = shlex.join(["hotline", "bench", "apology", "--calls", str(calls),
                              "--concurrency", str(concurrency), "--fault", engine_fault])
        write_section(output, section_name(engine_fault), render_section(result, command))
        typer.echo(f"written to {output}")


@bench_app.command("faults")
def faults(
    drops: int = typer.Option(20, "--drops", "-n", min=1,
                              help="Calls, each with its engine session dropped mid-reply."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the server's log."),
    output: Path = REPORT_OPTION,
    no_output: bool = NO_REPORT_OPTION,
) -> None:
    """Engine drops mid-call (close 1011) against the simulator's modeled profile, at real
    time: the resume gap (engine_lost → engine_resumed) and the gap the caller hears."""
    from rich.console import Console

    from hotline.benchmarks.faults import bench_faults
    from hotline.logs import configure_logging

    configure_logging("INFO" if verbose else "WARNING")
    if not verbose:
        logging.getLogger("hotline.sim").setLevel(logging.ERROR)
    report = bench_faults(drops, Console(), shlex.join(["hotline", "bench", "faults",
                                                        "--drops", str(drops)]),
                          output=None if no_output else output)
    if report.resumed < len(report.drops):
        raise typer.Exit(1)


@bench_app.command("fleet")
def fleet(
    calls: int = typer.Option(20, "--calls", "-n", min=1, help="Calls per path."),
    redis_url: str = typer.Option("redis://127.0.0.1:6379/0", "--redis-url",
                                  help="The Redis the two instances share."),
    output: Path = REPORT_OPTION,
    no_output: bool = NO_REPORT_OPTION,
) -> None:
    """Two instances behind nginx: the greeting's start → first frame when the stream
    reaches the webhook's instance, and when it reaches the other one."""
    import asyncio

    from hotline.benchmarks.doc_sections import write_section
    from hotline.benchmarks.fleet import (
        CROSS,
        SAME,
        SECTION,
        bench_fleet,
        command_line,
        render_section,
    )
    from hotline.logs import configure_logging

    configure_logging("WARNING")
    # The simulated engine logs each warm session the webhook's instance gives up while
    # it is still connecting (the stream went to the other instance): that is intended.
    logging.getLogger("websockets.server").setLevel(logging.CRITICAL)
    result = asyncio.run(bench_fleet(calls, redis_url))
    for path in (SAME, CROSS):
        typer.echo(result.line(path))
    typer.echo(f"warm sessions left open: {result.warm_left_open}")
    if not no_output:
        write_section(output, SECTION, render_section(result, command_line(calls)))
        typer.echo(f"written to {output}")


@bench_app.command("capacity")
def capacity(
    steps: str = typer.Option("50,100,200,300,400,500,600", "--steps",
                              help="Concurrent calls at each step, comma-separated."),
    delta_ms: str | None = typer.Option(
        None, "--delta-ms",
        help="Engine delta sizes to run, comma-separated: 20 (the worst case) and 100 (the "
             "larger deltas the real API sends). Default 20,100; with --ab one size, "
             "default 20."),
    generators: int = typer.Option(2, "--generators", "-g", min=1,
                                   help="Load-generator processes (on the other cores)."),
    window_s: float = typer.Option(8.0, "--window", min=0.5,
                                   help="Seconds measured at each step."),
    settle_s: float = typer.Option(2.0, "--settle", min=0.0,
                                   help="Seconds after a step's calls are up, before measuring."),
    turn_every_s: float = typer.Option(4.0, "--turn-every", min=1.0,
                                       help="A caller turn (a barge-in) this often per call."),
    profile_at: int | None = typer.Option(
        None, "--profile-at", help="Profile the server with py-spy (the dev extra) during "
                                   "the window of the step with this many calls."),
    server_src: Path | None = typer.Option(
        None, "--server-src", help="Run the server from another checkout's src/ (to measure "
                                   "a before against an after)."),
    nice: int = typer.Option(
        0, "--nice", min=-20, max=19,
        help="Niceness of the server and the generators (negative: root only), so that other "
             "work on a shared machine does not starve them."),
    keep_going: bool = typer.Option(False, "--keep-going",
                                    help="Run every step even after one fails."),
    quick: bool = typer.Option(False, "--quick",
                               help="A few seconds: 2 steps of a few calls (a smoke test)."),
    label: str = typer.Option("", "--label",
                              help="Write the report's section `capacity-LABEL` "
                                   "(`capacity-floor-LABEL` with --floor; e.g. `before` "
                                   "with --server-src) instead of `capacity`."),
    server_env: list[str] = typer.Option(
        [], "--server-env", help="A HOTLINE_*=VALUE setting for the server under test "
                                 "(repeatable), e.g. HOTLINE_QUIET_AUDIO_BATCH_MS=100."),
    soak_calls: int = typer.Option(0, "--soak", min=0,
                                   help="Instead of the steps: a soak at this many calls."),
    soak_minutes: float = typer.Option(10.0, "--soak-minutes", min=0.1),
    call_s: float = typer.Option(0.0, "--call-length", min=0.0,
                                 help="Calls hang up after this many seconds and are replaced "
                                      "(0: they last the step; the soak defaults to 60)."),
    ab: str = typer.Option(
        "", "--ab", help="HOTLINE_X=V: measure the server without then with this setting, "
                         "alternating (--repeat times) at the steps, and report the pairs "
                         "(section `capacity-ab`)."),
    repeat: int = typer.Option(4, "--repeat", min=1, help="--ab: pairs per step."),
    floor: bool = typer.Option(
        False, "--floor",
        help="Measure the floor relay (the leanest Python relay of this traffic, benchmark "
             "code, not Hotline) instead of `hotline serve`: what Python costs at best. "
             "Its section is `capacity-floor`."),
    output: Path = REPORT_OPTION,
    no_output: bool = NO_REPORT_OPTION,
) -> None:
    """Concurrent full-duplex calls against one `hotline serve` pinned to one core: relay
    delay, lost frames, CPU per call-second and RSS per step; calls per core."""
    from rich.console import Console

    from hotline.benchmarks.capacity import (
        FLOOR_SECTION,
        SECTION,
        CapacityConfig,
        ServerKind,
        bench_capacity,
        bench_soak,
    )

    try:
        step_list = tuple(int(x) for x in steps.split(",") if x.strip())
        deltas = tuple(int(x) for x in (delta_ms or "20,100").split(",") if x.strip())
    except ValueError as exc:
        raise typer.BadParameter("comma-separated integers") from exc
    settings = _server_settings(server_env)
    server = ServerKind.FLOOR if floor else ServerKind.HOTLINE
    # The floor relay is the floor of the media path: calls replaced in the window would
    # add its bare set-up (no signature check, no store) to what is read as a relay's cost.
    if floor and (soak_calls or server_src or settings or call_s):
        raise typer.BadParameter("the floor relay keeps no records, has no settings and "
                                 "no real call set-up: not with --soak, --server-src, "
                                 "--server-env or --call-length", param_hint="--floor")
    # Checked before the soak's branch, which would otherwise run and ignore --ab; and
    # what the pairs cannot honour (a profile, a second delta size) is refused, not
    # silently dropped while the command line written with the results names it.
    if ab and delta_ms is None:
        deltas = deltas[:1]
    if ab and (floor or soak_calls or server_src or profile_at is not None
               or len(deltas) > 1):
        raise typer.BadParameter("not with --floor, --soak, --server-src, --profile-at "
                                 "or more than one --delta-ms", param_hint="--ab")
    if quick:
        step_list, window_s, settle_s, deltas = (2, 4), 1.0, 0.5, deltas[:1]
    command = ["hotline", "bench", "capacity", "--steps", ",".join(map(str, step_list)),
               "--delta-ms", ",".join(map(str, deltas)), "--generators", str(generators),
               "--window", f"{window_s:g}"]
    if profile_at is not None:
        command += ["--profile-at", str(profile_at)]
    if soak_calls:
        window = window_s if window_s != 8.0 else 30.0
        length = call_s or 60.0
        command = ["hotline", "bench", "capacity", "--soak", str(soak_calls), "--soak-minutes",
                   f"{soak_minutes:g}", "--delta-ms", str(deltas[0]), "--window", f"{window:g}",
                   "--call-length", f"{length:g}", "--nice", str(nice),
                   *_server_env_args(settings)]
        config = CapacityConfig(delta_ms=deltas[0], generators=generators, window_s=window,
                                turn_every_s=turn_every_s, call_s=length, nice=nice,
                                server_env=settings,
                                server_src=str(server_src) if server_src else None)
        try:
            result = bench_soak(config, soak_calls, soak_minutes, Console(), shlex.join(command),
                                None if no_output else output)
        except RuntimeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        if result.recorded < result.placed:
            raise typer.Exit(1)
        return
    if ab:
        [setting] = _server_settings([ab], "--ab")
        config = CapacityConfig(steps=step_list, delta_ms=deltas[0], generators=generators,
                                window_s=window_s, settle_s=settle_s,
                                turn_every_s=turn_every_s, call_s=call_s, nice=nice,
                                server_env=settings)
        command += ["--ab", ab, "--repeat", str(repeat), "--nice", str(nice),
                    *_server_env_args(settings)]
        _capacity_ab(config, setting, repeat, shlex.join(command),
                     None if no_output else output, _section("capacity-ab", label))
        return
    if floor:
        command += ["--floor"]
    if label:
        command += ["--label", label]
    if nice:
        command += ["--nice", str(nice)]
    command += _server_env_args(settings)
    configs = [CapacityConfig(steps=step_list, delta_ms=d, generators=generators,
                              window_s=window_s, settle_s=settle_s, turn_every_s=turn_every_s,
                              stop_on_fail=not keep_going and not quick,
                              profile_at=profile_at if d == deltas[0] else None,
                              server_src=str(server_src) if server_src else None,
                              call_s=call_s, nice=nice, server_env=settings, server=server)
               for d in deltas]
    try:
        bench_capacity(configs, Console(), shlex.join(command),
                       None if no_output else output,
                       section=_section(FLOOR_SECTION if floor else SECTION, label))
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def _capacity_ab(config: CapacityConfig, setting: tuple[str, str], repeats: int,
                 command: str, output: Path | None, section: str) -> None:
    from rich.console import Console

    from hotline.benchmarks.capacity_ab import bench_ab
    from hotline.benchmarks.doc_sections import write_section

    console = Console()
    try:
        result = bench_ab(config, setting, repeats, console)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    text = result.markdown(command)
    console.print(text, markup=False)
    if output is not None:
        write_section(output, section, text)
        console.print(f"written: {output}")


def _section(base: str, label: str) -> str:
    return f"{base}-{label}" if label else base


def _server_settings(pairs: list[str],
                     option: str = "--server-env") -> tuple[tuple[str, str], ...]:
    settings = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("HOTLINE_"):
            raise typer.BadParameter(f"{pair!r}: expected HOTLINE_NAME=VALUE",
                                     param_hint=option)
        settings.append((name, value))
    return tuple(settings)


def _server_env_args(settings: tuple[tuple[str, str], ...]) -> list[str]:
    return [arg for name, value in settings for arg in ("--server-env", f"{name}={value}")]
