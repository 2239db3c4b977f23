"""The benchmark's report: tables on the terminal, docs/benchmarks.md, the raw samples as
JSON, and the problems seen along the way."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from hotline.benchmarks.calls import (
    CALLEE_HELLO,
    INBOUND,
    LISTEN_MS,
    MACHINE_BEEP_MS,
    MACHINE_GREETING,
    OUTBOUND,
    RING_MS,
    VOICEMAIL,
    VOICEMAIL_LISTEN_MS,
)
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
    return [run.strategy.name, run.direction, f"{len(run.ok)}/{len(run.samples)}",
            _spread(summary.webhook_to_twiml), _spread(summary.start_to_first_frame),
            _spread(summary.overhead), _ratio(summary, baseline),
            _targets_cell(targets_for(summary))]


HEADERS = ("strategy", "direction", "ok calls", "(a) webhook → TwiML ms p50 / p95 / p99",
           "(b) start → first greeting frame ms p50 / p95 / p99",
           "(c) our overhead ms p50 / p95 / p99", "(b) p50 ÷ hotline", "targets met")
SHORT_HEADERS = ("strategy", "direction", "ok", "(a) p50/p95/p99", "(b) p50/p95/p99",
                 "(c) p50/p95/p99", "(b) ÷ hotline", "targets")
LEGEND = ("ms; (a) webhook → TwiML, (b) stream start → first greeting frame, (c) our overhead "
          "= (b) − the engine's own time; measured by the simulated phone")
VOICEMAIL_HEADERS = ("strategy", "direction", "ok calls",
                     "beep → first voicemail frame ms p50 / p95 / p99",
                     "AMD verdict sent → first voicemail frame ms p50 / p95 / p99")
VOICEMAIL_DIRECTION = "outbound, answering machine"


def _voicemail_row(summary: Summary) -> list[str]:
    run = summary.run
    return [run.strategy.name, VOICEMAIL_DIRECTION, f"{len(run.ok)}/{len(run.samples)}",
            _spread(summary.beep_to_voicemail), _spread(summary.verdict_to_voicemail)]


def _call_rows(result: BenchResult, profile: str) -> list[list[str]]:
    rows = []
    for direction in (INBOUND, OUTBOUND):
        summaries = result.summaries(profile, direction)
        baseline = _baseline(summaries)
        rows += [_row(summary, baseline) for summary in summaries]
    return rows


def _profile_of(result: BenchResult, profile: str) -> Summary | None:
    for direction in result.directions:
        summaries = result.summaries(profile, direction)
        if summaries:
            return summaries[0]
    return None


def _baseline(summaries: list[Summary]) -> Summary | None:
    return next((s for s in summaries if s.run.strategy.name == BASELINE), None)


def rich_tables(result: BenchResult) -> list[Table]:
    tables = []
    for profile in result.profiles:
        first = _profile_of(result, profile)
        if first is None:
            continue
        rows = _call_rows(result, profile)
        if rows:
            table = Table(title=f"profile {profile}: {describe_profile(first.run.profile)}; "
                                f"{result.calls} calls per direction, {result.concurrency} "
                                "at a time", caption=LEGEND)
            for index, header in enumerate(SHORT_HEADERS):
                table.add_column(header, justify="left" if index < 2 else "right",
                                 no_wrap=True)
            for row in rows:
                table.add_row(*row)
            tables.append(table)
        voicemail = result.summaries(profile, VOICEMAIL)
        if voicemail:
            table = Table(title=f"profile {profile}: voicemail, {result.voicemail_calls} calls")
            for index, header in enumerate(("strategy", "direction", "ok",
                                            "beep → 1st frame p50/p95/p99",
                                            "verdict → 1st frame p50/p95/p99")):
                table.add_column(header, justify="left" if index < 2 else "right")
            for summary in voicemail:
                table.add_row(*_voicemail_row(summary))
            tables.append(table)
    checks = result.checks()
    if checks:
        table = Table(title="targets (benchmark targets, not timed tests)")
        for header in ("profile", "strategy", "direction", "target", "measured ms",
                       "limit ms", ""):
            table.add_column(header, justify="right" if "ms" in header else "left")
        for check in checks:
            table.add_row(check.profile, check.strategy, check.direction, check.description,
                          _ms(check.value), f"{check.limit:g}",
                          f"[green]{check.mark}[/green]" if check.passed
                          else f"[red]{check.mark}[/red]")
        tables.append(table)
    if result.renders:
        table = Table(title="greeting renders waited for before measuring")
        for header in ("profile", "strategy", "greetings", "rendered", "server start → "
                       "all cached s", "waited after start s"):
            table.add_column(header, justify="left" if header in ("profile", "strategy")
                             else "right")
        for (profile, name), render in result.renders.items():
            table.add_row(profile, name, str(render.greetings), str(render.rendered),
                          f"{render.total_s:.2f}", f"{render.waited_s:.2f}")
        tables.append(table)
    return tables


def problems(result: BenchResult) -> list[str]:
    lines = []
    counted: dict[str, int] = {}
    for summary in result.server_errors:
        counted[summary] = counted.get(summary, 0) + 1
    for summary, count in sorted(counted.items(), key=lambda item: -item[1]):
        lines.append(f"the server logged {count} error(s): {summary}")
    for (profile, name, direction), run in result.runs.items():
        where = f"{profile} · {name} · {direction}"
        reasons: dict[str, int] = {}
        for sample in run.failed:
            reasons[sample.problem or "no measurement"] = reasons.get(
                sample.problem or "no measurement", 0) + 1
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
            lines.append(f"{where}: {count} call(s): {reason}")
        unattributed: dict[str, int] = {}
        for sample in run.ok:
            if sample.unattributed:
                unattributed[sample.unattributed] = unattributed.get(sample.unattributed, 0) + 1
        for reason, count in sorted(unattributed.items(), key=lambda item: -item[1]):
            lines.append(f"{where}: (c) unknown for {count} call(s): {reason}")
        for pause in result.gc_pauses:
            hit = [s for s in run.ok if s.phone.webhook_sent_at is not None
                   and s.phone.first_media_at is not None
                   and pause.overlaps(s.phone.webhook_sent_at, s.phone.first_media_at)]
            if hit:
                lines.append(f"{where}: {len(hit)} call(s) were waiting on a full "
                             f"garbage collection in the server's process ({pause.ms:.0f} ms, "
                             f"{pause.objects} objects tracked): (b) of those calls "
                             + ", ".join(_ms(s.start_to_first_media_ms) for s in hit) + " ms")
        if not run.strategy.live_greeting:
            live = sum(1 for s in run.ok if s.live_greeting)
            if live:
                lines.append(f"{where}: {live} call(s) greeted live (the greeting "
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
  the number the latency budget is about. Outbound, the callee's phone (answered, its
  stream opened) measures the same thing; the AMD verdict, which the greeting may wait
  for, comes a fixed time after the pickup, not after `start`.
- **beep → first voicemail frame**: the answering machine's beep ended → the first
  `media` message of the voicemail arrived. The voicemail's first frame is the first one
  after the beep and after the AMD verdict was sent (the server cannot know sooner), and
  after the `clear` that cut a greeting still playing then, if there was one. The
  simulated Twilio sends `machine_end_beep` as the beep ends, so the two columns differ
  by the simulator's own time to send it.
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
- The ratio column is this strategy's (b) p50 divided by `hotline`'s, in the same
  direction.
- Outbound calls are matched to engine sessions the same way (the lane's business
  places them); voicemail calls get no (a)/(c).
"""


def webhook_to_start_ms(summaries: Sequence[Summary]) -> float | None:
    """Median time from the webhook to the stream's `start`, over every measured call."""
    gaps = [(s.phone.start_sent_at - s.phone.webhook_sent_at) * 1000
            for summary in summaries for s in summary.run.ok
            if s.phone.start_sent_at is not None and s.phone.webhook_sent_at is not None]
    return percentile(gaps, 50)


def _setup_lines(result: BenchResult) -> list[str]:
    directions = result.directions
    inbound, outbound = INBOUND in directions, OUTBOUND in directions
    lines = []
    what = " and ".join(d for d in (INBOUND, OUTBOUND) if d in directions)
    if what:
        lines.append(
            f"- {result.calls} {what} calls per strategy and profile (each direction), "
            f"{result.concurrency} at a time (the first {result.concurrency} started "
            f"{result.ramp_ms:g} ms apart, so that the concurrent calls do not stay in "
            "lockstep); one fresh server (fresh SQLite store, empty greeting cache) per "
            "strategy and profile, which takes every direction in turn; one untimed warm-up "
            "call per business and direction first")
    if VOICEMAIL in directions:
        lines.append(
            f"- Voicemail: {result.voicemail_calls} outbound calls per strategy and profile "
            "answered by an answering machine (on the same server, after the other calls; no "
            "warm-up call)")
    if inbound:
        lines.append(f"- Inbound: each call listens to the first {LISTEN_MS} ms of the "
                     "greeting, then hangs up; the phone paces its media at real time")
        lines.append(
            "- Inbound: the phone opens the media stream as soon as the TwiML arrives (no "
            "Twilio-side gap between the TwiML and the stream `start`)"
            if not result.stream_gap_ms else
            f"- Inbound: the phone waits {result.stream_gap_ms:g} ms between the TwiML and "
            "opening the media stream (modelled Twilio gap; not part of (a))")
    if outbound or VOICEMAIL in directions:
        lines.append(
            "- Outbound: placed as the product places them: `POST /api/calls` (the lane's "
            "business, its `reminder` template) → the server creates the call through the "
            "simulated Twilio REST API with async AMD (`MachineDetection=DetectMessageEnd`, "
            f"`AsyncAmd=true`) → the callee's phone rings {RING_MS} ms, answers, fetches the "
            "TwiML and opens the media stream at once; the AMD verdict is POSTed to the "
            "server's `/twilio/amd`")
    if outbound:
        lines.append(
            f"- Outbound, a person: says \"{CALLEE_HELLO}\" on picking up, hears "
            f"{LISTEN_MS} ms of the greeting, hangs up; AMD answers `human` "
            f"{result.amd_ms / 1000:g} s after the pickup")
    if VOICEMAIL in directions:
        lines.append(
            f"- Voicemail: the machine plays its message (\"{MACHINE_GREETING}\"), a "
            f"{MACHINE_BEEP_MS} ms beep, then records {VOICEMAIL_LISTEN_MS / 1000:g} s and "
            "hangs up; AMD answers `machine_end_beep` when the beep ends")
    return lines


def _render_lines(result: BenchResult) -> list[str]:
    cached = [name for name in result.strategies if STRATEGIES[name].greeting_cache]
    if not cached:
        return []
    lines = ["", "### Greeting renders before measuring", "",
             "Strategies with the greeting cache (" + ", ".join(f"`{n}`" for n in cached)
             + ") measure a warm cache: after its server starts, the run **waits until the "
             "cache holds every greeting the calls will need** before it places the first "
             "call. The server renders each business's inbound greeting when it starts (the "
             "engine speaks it once, at the profile's speed and at real time, then it is kept "
             "in memory); for outbound, the run asks the cache for each business's template "
             "greeting and voicemail, as the server would render them for the first call "
             "that needs them. The outbound template has no per-call variables, so its "
             "greeting is the same text on every call; a greeting with per-call variables is "
             "rendered while the phone rings and used only if ready, which this benchmark "
             "does not measure. Without the cache nothing is waited for.", "",
             "| profile | strategy | greetings waited for | rendered by the engine | server "
             "start → all in the cache s | of which after the server was up s |",
             "|---|---|---|---|---|---|"]
    for (profile, name), render in result.renders.items():
        lines.append(f"| {profile} | `{name}` | {render.greetings} | {render.rendered} | "
                     f"{render.total_s:.2f} | {render.waited_s:.2f} |")
    return lines


def render_markdown(result: BenchResult, *, command: str) -> str:
    first_run = next(iter(result.runs.values()), None)
    lines = [
        "## `hotline bench greeting`: stream `start` → first greeting frame",
        "",
        "Generated by the benchmark (`hotline bench greeting`); do not edit by hand.",
        "",
        f"- Run: {result.started:%Y-%m-%d %H:%M} UTC, `{command}`, {result.wall_s:.0f} s",
        f"- Machine: {MACHINE_NOTE}; {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.system()} {platform.machine()}",
        ("- Processes: the server, the engine simulator, the Twilio API simulator and the "
         "simulated phone in one process, on one event loop" if result.same_process else
         "- Processes: the server alone in one process (its own event loop, as in "
         "production); the engine simulator, the Twilio REST API simulator and the simulated "
         "phone together in a second process; all traffic over loopback sockets"),
        *_setup_lines(result),
    ]
    if first_run is not None:
        lines.append(
            f"- Businesses: {min(result.concurrency, result.calls)} branches of a dental group, "
            f"one per concurrent call; compact prompt {first_run.compact_chars} chars, full "
            f"prompt {first_run.full_chars} chars (inbound)")
    lines += ["", "### Strategies", "", "| strategy | warm_sessions | greeting_cache | "
              "greeting_prompt | greeting_in_full_prompt | what it does |",
              "|---|---|---|---|---|---|"]
    for name in result.strategies:
        s = STRATEGIES[name]
        lines.append(f"| `{s.name}` | {s.warm_sessions} | {s.greeting_cache} | "
                     f"{s.greeting_prompt} | {s.greeting_in_full_prompt} | {s.summary} |")
    lines += _render_lines(result)
    for profile in result.profiles:
        first = _profile_of(result, profile)
        if first is None:
            continue
        run = first.run
        lines += ["", f"### Profile `{profile}`: {describe_profile(run.profile)}", ""]
        if run.profile.first_audio_base_ms or run.profile.first_audio_per_1000_chars_ms:
            lines += [f"Engine time to first audio: {run.engine_first_audio_ms:.0f} ms with "
                      f"the compact prompt, {run.profile.first_audio_ms(run.full_chars):.0f} "
                      "ms with the full prompt (inbound).", ""]
        lead = webhook_to_start_ms(result.summaries(profile, INBOUND))
        if lead is not None:
            setup = run.profile.connect_ms + run.profile.session_update_ms
            lines += [f"Inbound, the phone sent the stream's `start` a median {lead:.1f} ms "
                      f"after the webhook; a warm session needs {setup:g} ms of engine time "
                      "(connect + `session.update`) plus our own to be ready.", ""]
        rows = _call_rows(result, profile)
        if rows:
            lines.append("| " + " | ".join(HEADERS) + " |")
            lines.append("|" + "---|" * len(HEADERS))
            for cells in rows:
                cells[0] = f"`{cells[0]}`"
                lines.append("| " + " | ".join(cells) + " |")
        voicemail = result.summaries(profile, VOICEMAIL)
        if voicemail:
            lines += ["", f"Voicemail ({result.voicemail_calls} calls per strategy; an "
                      "answering machine answers the outbound call):", "",
                      "| " + " | ".join(VOICEMAIL_HEADERS) + " |",
                      "|" + "---|" * len(VOICEMAIL_HEADERS)]
            for summary in voicemail:
                cells = _voicemail_row(summary)
                cells[0] = f"`{cells[0]}`"
                lines.append("| " + " | ".join(cells) + " |")
    checks = result.checks()
    if checks:
        lines += ["", "### Targets", "",
                  "| profile | strategy | direction | target | measured | limit | |",
                  "|---|---|---|---|---|---|---|"]
        for check in checks:
            lines.append(f"| {check.profile} | `{check.strategy}` | {check.direction} | "
                         f"{check.description} | {_ms(check.value)} | {check.limit:g} | "
                         f"{check.mark} |")
    trouble = problems(result)
    if trouble:
        lines += ["", "### Problems seen", ""] + [f"- {line}" for line in trouble]
    lines += ["", "### Definitions", "", DEFINITIONS.format(calls=result.calls).rstrip(), ""]
    return "\n".join(lines)


def raw_samples(result: BenchResult) -> list[dict[str, Any]]:
    """One row per measured call: the phone's times (monotonic s) and the three numbers."""
    rows = []
    for (profile, name, direction), run in result.runs.items():
        for sample in run.samples:
            phone = sample.phone
            rows.append({
                "profile": profile, "strategy": name, "direction": direction,
                "index": sample.index,
                "lane": sample.lane, "call_sid": phone.call_sid,
                "engine_session": sample.session.id if sample.session else None,
                "webhook_sent_at": phone.webhook_sent_at,
                "twiml_received_at": sample.twiml_arrived_at or phone.twiml_received_at,
                "start_sent_at": phone.start_sent_at, "first_media_at": phone.first_media_at,
                "webhook_to_twiml_ms": sample.webhook_to_twiml_ms,
                "start_to_first_media_ms": sample.start_to_first_media_ms,
                "engine_ms": sample.engine_ms, "overhead_ms": sample.overhead_ms,
                "beep_ended_at": phone.beep_ended_at, "amd_callback_at": phone.amd_callback_at,
                "voicemail_media_at": sample.voicemail_media_at,
                "beep_to_voicemail_ms": sample.beep_to_voicemail_ms,
                "live_greeting": sample.live_greeting, "problem": sample.problem,
                "unattributed": sample.unattributed,
            })
    return rows
