"""The benchmark's report: tables on the terminal, docs/benchmarks.md, the raw samples as
JSON, and the problems seen along the way."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from hotline.benchmarks.calls import LISTEN_MS
from hotline.benchmarks.stats import (
    PERCENTILES,
    BenchResult,
    Spread,
    Summary,
    TargetCheck,
    percentile,
    targets_for,
)
from hotline.benchmarks.strategies import BASELINE, STRATEGIES, describe_profile

MACHINE_NOTE = "shared, noisy 2-core machine"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _spread(spread: Spread) -> str:
    return " / ".join(_ms(spread.get(p)) for p in PERCENTILES)


def _ratio(summary: Summary, baseline: Summary | None) -> str:
    ours = summary.start_to_first_frame.p50
    base = baseline.start_to_first_frame.p50 if baseline is not None else None
    if ours is None or base is None or base <= 0:
        return "—"
    return f"{ours / base:.1f}×"


def _targets_cell(checks: list[TargetCheck]) -> str:
    if not checks:
        return "—"
    passed = sum(1 for c in checks if c.passed)
    return f"{'✓' if passed == len(checks) else '✗'} {passed}/{len(checks)}"


def _row(summary: Summary, baseline: Summary | None) -> list[str]:
    run = summary.run
    return [run.strategy.name, f"{len(run.ok)}/{len(run.samples)}",
            _spread(summary.webhook_to_twiml), _spread(summary.start_to_first_frame),
            _spread(summary.overhead), _ratio(summary, baseline),
            _targets_cell(targets_for(summary))]


HEADERS = ("strategy", "ok calls", "(a) webhook → TwiML ms p50 / p95 / p99",
           "(b) start → first greeting frame ms p50 / p95 / p99",
           "(c) our overhead ms p50 / p95 / p99", "(b) p50 ÷ hotline", "targets met")
SHORT_HEADERS = ("strategy", "ok", "(a) p50/p95/p99", "(b) p50/p95/p99", "(c) p50/p95/p99",
                 "(b) ÷ hotline", "targets")
LEGEND = ("ms; (a) webhook → TwiML, (b) stream start → first greeting frame, (c) our overhead "
          "= (b) − the engine's own time; measured by the simulated phone")


def _baseline(summaries: list[Summary]) -> Summary | None:
    return next((s for s in summaries if s.run.strategy.name == BASELINE), None)


def rich_tables(result: BenchResult) -> list[Table]:
    tables = []
    for profile in result.profiles:
        summaries = result.summaries(profile)
        if not summaries:
            continue
        baseline = _baseline(summaries)
        table = Table(title=f"profile {profile}: {describe_profile(summaries[0].run.profile)}; "
                            f"{result.calls} calls, {result.concurrency} at a time",
                      caption=LEGEND)
        for index, header in enumerate(SHORT_HEADERS):
            table.add_column(header, justify="left" if index == 0 else "right",
                             no_wrap=index != 0)
        for summary in summaries:
            table.add_row(*_row(summary, baseline))
        tables.append(table)
    checks = result.checks()
    if checks:
        table = Table(title="targets (benchmark targets, not timed tests)")
        for header in ("profile", "strategy", "target", "measured ms", "limit ms", ""):
            table.add_column(header, justify="right" if "ms" in header else "left")
        for check in checks:
            table.add_row(check.profile, check.strategy, check.description, _ms(check.value),
                          f"{check.limit:g}",
                          f"[green]{check.mark}[/green]" if check.passed
                          else f"[red]{check.mark}[/red]")
        tables.append(table)
    return tables


def problems(result: BenchResult) -> list[str]:
    lines = []
    counted: dict[str, int] = {}
    for summary in result.server_errors:
        counted[summary] = counted.get(summary, 0) + 1
    for summary, count in sorted(counted.items(), key=lambda item: -item[1]):
        lines.append(f"the server logged {count} error(s): {summary}")
    for (profile, name), run in result.runs.items():
        reasons: dict[str, int] = {}
        for sample in run.failed:
            reasons[sample.problem or "no measurement"] = reasons.get(
                sample.problem or "no measurement", 0) + 1
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
            lines.append(f"{profile} · {name}: {count} call(s): {reason}")
        unattributed: dict[str, int] = {}
        for sample in run.ok:
            if sample.unattributed:
                unattributed[sample.unattributed] = unattributed.get(sample.unattributed, 0) + 1
        for reason, count in sorted(unattributed.items(), key=lambda item: -item[1]):
            lines.append(f"{profile} · {name}: (c) unknown for {count} call(s): {reason}")
        for pause in result.gc_pauses:
            hit = [s for s in run.ok if s.phone.webhook_sent_at is not None
                   and s.phone.first_media_at is not None
                   and pause.overlaps(s.phone.webhook_sent_at, s.phone.first_media_at)]
            if hit:
                lines.append(f"{profile} · {name}: {len(hit)} call(s) were waiting on a full "
                             f"garbage collection in the server's process ({pause.ms:.0f} ms, "
                             f"{pause.objects} objects tracked): (b) of those calls "
                             + ", ".join(_ms(s.start_to_first_media_ms) for s in hit) + " ms")
        if not run.strategy.live_greeting:
            live = sum(1 for s in run.ok if s.live_greeting)
            if live:
                lines.append(f"{profile} · {name}: {live} call(s) greeted live (the greeting "
                             "cache did not have the greeting)")
    return lines


def print_report(result: BenchResult, console: Console) -> None:
    for table in rich_tables(result):
        console.print(table)
    for line in problems(result):
        console.print(f"[yellow]⚠ {line}[/yellow]")
    console.print(f"[dim]{result.wall_s:.0f} s in all[/dim]")


DEFINITIONS = """\
All times are measured by the simulated phone (the Twilio side) with `time.monotonic()`,
not reported by the server about itself.

- **(a) webhook → TwiML**: the phone sends the signed voice webhook → the TwiML answer
  has arrived (`PhoneCallResult.webhook_to_twiml_ms`).
- **(b) start → first greeting frame**: the phone sends the media stream's `start` → the
  first `media` message of the greeting has arrived (`start_to_first_media_ms`). This is
  the number the latency budget is about.
- **(c) our overhead**: (b) minus the engine's own time on the greeting's path, taken
  from the engine simulator's records of the call's session: the union, within
  [`start` sent, first frame received], of
  - connecting: the profile's connect time, ending when the simulator accepted the
    connection (`session.created`; the simulator holds each handshake for exactly that
    long and records no earlier moment),
  - each `session.update`: received → its `session.updated` sent,
  - producing the greeting: the first `response.create` received (before or after
    `start`: a warm session asks for the greeting as soon as it is configured) → the
    first `response.output_audio.delta` sent.

  Setup that finished before `start` (a warm session) falls outside the window and is
  not subtracted; setup still running at `start` is. When the greeting came from the
  greeting cache (the call's session got no `response.create` before the first frame),
  no engine is on the path and (c) = (b).
- Calls are matched to engine sessions without the CallSid (the engine cannot see it):
  each concurrency slot ("lane") has its own business (branches of one dental group,
  identical but for the branch name), a lane carries one call at a time, and a session
  belongs to the lane call whose interval [webhook sent, the lane's next webhook sent)
  holds its connect start.
- In the `zero` profile connecting takes no simulated time, so a connection made after
  `start` (loopback TCP + WebSocket handshake, the SDK) is all ours.
- (a) includes both HTTP stacks: the phone's (httpx, request signing) and the server's
  (uvicorn, form parsing, signature check), besides the webhook handler itself.
- Percentiles interpolate linearly between ranks; with {calls} calls, p99 is close to the
  slowest call.
- The ratio column is this strategy's (b) p50 divided by `hotline`'s.
"""


def webhook_to_start_ms(summaries: Sequence[Summary]) -> float | None:
    """Median time from the webhook to the stream's `start`, over every measured call."""
    gaps = [(s.phone.start_sent_at - s.phone.webhook_sent_at) * 1000
            for summary in summaries for s in summary.run.ok
            if s.phone.start_sent_at is not None and s.phone.webhook_sent_at is not None]
    return percentile(gaps, 50)


def render_markdown(result: BenchResult, *, command: str) -> str:
    first_run = next(iter(result.runs.values()), None)
    lines = [
        "# Benchmarks",
        "",
        "## `hotline bench greeting`: stream `start` → first greeting frame",
        "",
        "Generated by the benchmark (`hotline bench greeting`); do not edit by hand.",
        "",
        f"- Run: {result.started:%Y-%m-%d %H:%M} UTC, `{command}`, {result.wall_s:.0f} s",
        f"- Machine: {MACHINE_NOTE}; {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.system()} {platform.machine()}",
        ("- Processes: the server, the engine simulator and the simulated phone in one "
         "process, on one event loop" if result.same_process else
         "- Processes: the server alone in one process (its own event loop, as in "
         "production); the engine simulator and the simulated phone together in a second "
         "process; all traffic over loopback sockets"),
        f"- {result.calls} inbound calls per strategy and profile, {result.concurrency} at a "
        f"time (the first {result.concurrency} started {result.ramp_ms:g} ms apart, so that "
        "the concurrent calls do not stay in lockstep); one fresh server (fresh SQLite "
        "store, empty greeting cache) per strategy; one untimed warm-up call per business "
        "first",
        f"- Each call listens to the first {LISTEN_MS} ms of the greeting, then hangs up; "
        "the phone paces its media at real time",
        ("- The phone opens the media stream as soon as the TwiML arrives (no Twilio-side gap "
         "between the TwiML and the stream `start`)" if not result.stream_gap_ms else
         f"- The phone waits {result.stream_gap_ms:g} ms between the TwiML and opening the "
         "media stream (modelled Twilio gap; not part of (a))"),
    ]
    if first_run is not None:
        lines.append(
            f"- Businesses: {min(result.concurrency, result.calls)} branches of a dental group, "
            f"one per concurrent call; compact prompt {first_run.compact_chars} chars, full "
            f"prompt {first_run.full_chars} chars")
    lines += ["", "### Strategies", "", "| strategy | warm_sessions | greeting_cache | "
              "greeting_prompt | greeting_in_full_prompt | what it does |",
              "|---|---|---|---|---|---|"]
    for name in result.strategies:
        s = STRATEGIES[name]
        lines.append(f"| `{s.name}` | {s.warm_sessions} | {s.greeting_cache} | "
                     f"{s.greeting_prompt} | {s.greeting_in_full_prompt} | {s.summary} |")
    for profile in result.profiles:
        summaries = result.summaries(profile)
        if not summaries:
            continue
        run = summaries[0].run
        baseline = _baseline(summaries)
        lines += ["", f"### Profile `{profile}`: {describe_profile(run.profile)}", ""]
        if run.profile.first_audio_base_ms or run.profile.first_audio_per_1000_chars_ms:
            lines += [f"Engine time to first audio: {run.engine_first_audio_ms:.0f} ms with "
                      f"the compact prompt, {run.profile.first_audio_ms(run.full_chars):.0f} "
                      "ms with the full prompt.", ""]
        lead = webhook_to_start_ms(summaries)
        if lead is not None:
            setup = run.profile.connect_ms + run.profile.session_update_ms
            lines += [f"The phone sent the stream's `start` a median {lead:.1f} ms after the "
                      f"webhook; a warm session needs {setup:g} ms of engine time (connect + "
                      "`session.update`) plus our own to be ready.", ""]
        lines.append("| " + " | ".join(HEADERS) + " |")
        lines.append("|" + "---|" * len(HEADERS))
        for summary in summaries:
            cells = _row(summary, baseline)
            cells[0] = f"`{cells[0]}`"
            lines.append("| " + " | ".join(cells) + " |")
    checks = result.checks()
    if checks:
        lines += ["", "### Targets", "", "| profile | strategy | target | measured | limit | |",
                  "|---|---|---|---|---|---|"]
        for check in checks:
            lines.append(f"| {check.profile} | `{check.strategy}` | {check.description} | "
                         f"{_ms(check.value)} | {check.limit:g} | {check.mark} |")
    trouble = problems(result)
    if trouble:
        lines += ["", "### Problems seen", ""] + [f"- {line}" for line in trouble]
    lines += ["", "### Definitions", "", DEFINITIONS.format(calls=result.calls).rstrip(), ""]
    return "\n".join(lines)


def raw_samples(result: BenchResult) -> list[dict[str, Any]]:
    """One row per measured call: the phone's times (monotonic s) and the three numbers."""
    rows = []
    for (profile, name), run in result.runs.items():
        for sample in run.samples:
            phone = sample.phone
            rows.append({
                "profile": profile, "strategy": name, "index": sample.index,
                "lane": sample.lane, "call_sid": phone.call_sid,
                "engine_session": sample.session.id if sample.session else None,
                "webhook_sent_at": phone.webhook_sent_at,
                "twiml_received_at": sample.twiml_arrived_at or phone.twiml_received_at,
                "start_sent_at": phone.start_sent_at, "first_media_at": phone.first_media_at,
                "webhook_to_twiml_ms": sample.webhook_to_twiml_ms,
                "start_to_first_media_ms": sample.start_to_first_media_ms,
                "engine_ms": sample.engine_ms, "overhead_ms": sample.overhead_ms,
                "live_greeting": sample.live_greeting, "problem": sample.problem,
                "unattributed": sample.unattributed,
            })
    return rows
