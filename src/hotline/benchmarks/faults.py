"""`hotline bench faults`: how soon a call is back after its engine session drops mid-call.

Each run plays calls one after the other against a fresh Hotline server (uvicorn on a free
port), the engine simulator with its MODELED latency profile (connect 300 ms, first audio
350 ms + 150 ms per 1000 instruction chars) and the simulated phone, all at real time
(clock speed 1) on this event loop, over loopback sockets. In each call the caller says
something after the greeting; once the agent's reply is under way (its third 100 ms audio
chunk made), the simulator drops the session with close code 1011. The caller then stays
silent, so the resumed session is asked at once to go on with the cut reply.

For each drop:
  resume gap        `engine_lost` → `engine_resumed` on the call's timeline (reconnect with
                    the full prompt, conversation replayed)
  clear → audio     the phone's side: its buffer cleared at the drop → the first agent audio
                    it played after it (the hold line, when one plays)
  hold → reply      the hold line's end → the resumed reply's first audio played (0 when the
                    reply was queued behind it: it plays on without a gap)
  heard silence     the longest gap in agent audio at the phone around the drop: the longer
                    of the two above (without a hold line, clear → the reply)
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from hotline.audio.mulaw import BYTES_PER_MS
from hotline.benchmarks.doc_sections import write_section
from hotline.benchmarks.stats import percentile
from hotline.benchmarks.tenants import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OPENAI_KEY,
    bench_business,
    lane_number,
)
from hotline.canned import built_in_frames
from hotline.core.record import CallRecord
from hotline.prompts import CannedLine
from hotline.server import RunningServer, start_server
from hotline.settings import Settings
from hotline.sim.call_result import PhoneCallResult
from hotline.sim.engine import EngineSimulator, LatencyProfile, SimulatedSession
from hotline.sim.phone import SimulatedPhone
from hotline.sim.script import CallScript, Hangup, Say, Silence, WaitForAgentSilence
from hotline.store.database import Store

CALLER = "+15550002222"
TARGET_MS = 1000.0  # resumed within 1 s of the drop
DROP_AFTER_CHUNKS = 3


@dataclass(frozen=True, slots=True)
class HeardSilence:
    """Gaps in agent audio at the phone around one drop (ms of the phone's playout)."""

    clear_to_audio_ms: float  # the clear -> the first audio played after it
    hold_to_reply_ms: float | None  # the hold line's end -> the reply (None: no hold line)

    @property
    def longest_ms(self) -> float:
        return max(self.clear_to_audio_ms, self.hold_to_reply_ms or 0.0)


@dataclass(frozen=True, slots=True)
class DropResult:
    call_sid: str
    resume_gap_ms: float | None  # the timeline's engine_lost -> engine_resumed
    heard_gap_ms: float | None  # the phone's clear -> next agent audio
    outcome: str | None
    silence: HeardSilence | None = None  # the caller-heard silence around the drop


@dataclass(frozen=True, slots=True)
class FaultsReport:
    drops: list[DropResult]

    def resume_gaps(self) -> list[float]:
        return [d.resume_gap_ms for d in self.drops if d.resume_gap_ms is not None]

    def heard_gaps(self) -> list[float]:
        return [d.heard_gap_ms for d in self.drops if d.heard_gap_ms is not None]

    def silences(self) -> list[HeardSilence]:
        return [d.silence for d in self.drops if d.silence is not None]

    def hold_lines(self) -> int:
        return sum(1 for s in self.silences() if s.hold_to_reply_ms is not None)

    @property
    def resumed(self) -> int:
        return len(self.resume_gaps())


def _script() -> CallScript:
    return CallScript([WaitForAgentSilence(quiet_ms=300),
                       Say("I would like to book a cleaning for next week."),
                       Silence(ms=4000),  # the reply, the drop, the resume, the cut reply
                       Hangup()])


async def _drop_during_the_reply(session: SimulatedSession) -> float:
    """Close the session with 1011 once the reply to the caller's turn is under way; when
    (time.monotonic())."""
    while True:
        created = [s.event["response"]["id"] for s in session.sent
                   if s.type == "response.created"]
        if len(created) >= 2 and sum(
                1 for s in session.sent if s.type == "response.output_audio.delta"
                and s.event["response_id"] == created[1]) >= DROP_AFTER_CHUNKS:
            dropped_at = time.monotonic()
            await session.close(1011)
            return dropped_at
        await asyncio.sleep(0.002)


def heard_gap_ms(result: PhoneCallResult, dropped_at: float) -> float | None:
    """The phone's clear at the drop -> the first agent audio it received after it."""
    clear = next((c.at for c in result.clears if c.at >= dropped_at), None)
    if clear is None:
        return None
    after = next((m.at for m in result.media_received if m.at > clear), None)
    return None if after is None else (after - clear) * 1000


def heard_silence(result: PhoneCallResult, dropped_at: float,
                  hold: bytes) -> HeardSilence | None:
    """From what the phone played (`heard_segments`, each with its start): the clear at the
    drop -> the first audio after it, and, when that audio began with the hold line `hold`,
    the hold line's end -> the next audio (the resumed reply)."""
    clear = next((c.at for c in result.clears if c.at >= dropped_at), None)
    if clear is None:
        return None
    after = sorted((start, audio) for start, audio in result.heard_segments if start >= clear)
    if not after:
        return None
    first_ms = (after[0][0] - clear) * 1000
    heard = b"".join(audio for _, audio in after)
    if not hold or not heard.startswith(hold):
        return HeardSilence(first_ms, None)
    played = taken = 0
    while played < len(hold):  # the segments that played the hold line
        played += len(after[taken][1])
        taken += 1
    rest = after[taken:]
    if not rest:
        return HeardSilence(first_ms, None)
    hold_end = after[0][0] + len(hold) / BYTES_PER_MS / 1000
    return HeardSilence(first_ms, max(0.0, (rest[0][0] - hold_end) * 1000))


def resume_gap_ms(record: CallRecord) -> float | None:
    at = {stage.stage: stage.ms for stage in record.timeline}
    if "engine_lost" not in at or "engine_resumed" not in at:
        return None
    return at["engine_resumed"] - at["engine_lost"]


async def _one_drop(server: RunningServer, engine: EngineSimulator,
                    phone: SimulatedPhone) -> DropResult:
    sessions_before = len(engine.sessions)
    call = phone.start_call(to=lane_number(0), from_=CALLER, script=_script())
    session = await engine.wait_for_session(sessions_before, timeout=30)
    async with asyncio.timeout(60):
        dropped_at = await _drop_during_the_reply(session)
    result = await call.wait()
    record = await server.services.final_record(result.call_sid, timeout_s=30)
    hold = b"".join(base64.b64decode(f) for f in built_in_frames(CannedLine.HOLD, "en"))
    return DropResult(result.call_sid, resume_gap_ms(record), heard_gap_ms(result, dropped_at),
                      record.outcome, heard_silence(result, dropped_at, hold))


async def run_faults(drops: int, console: Console | None = None) -> FaultsReport:
    results: list[DropResult] = []
    with tempfile.TemporaryDirectory(prefix="hotline-bench-faults-") as tmp:
        workdir = Path(tmp)
        database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        store = Store(database_url)
        await store.upgrade()
        await store.save_business(bench_business(0))
        await store.close()
        engine = EngineSimulator(LatencyProfile.modeled(), api_key=OPENAI_KEY)
        await engine.start()
        server: RunningServer | None = None
        try:
            server = await start_server(Settings(
                _env_file=None, database_url=database_url,
                openai_api_key=SecretStr(OPENAI_KEY), openai_realtime_url=engine.url,
                twilio_account_sid=ACCOUNT_SID, twilio_auth_token=SecretStr(AUTH_TOKEN),
                journal_path=str(workdir / "journal.jsonl"), greeting_cache=False,
                api_token=None, redis_url=None, log_level="WARNING"))
            phone = SimulatedPhone(server_url=server.url, auth_token=AUTH_TOKEN,
                                   account_sid=ACCOUNT_SID)
            for n in range(drops):
                drop = await _one_drop(server, engine, phone)
                results.append(drop)
                if console is not None:
                    silence = drop.silence
                    console.print(
                        f"drop {n + 1}/{drops}: resume gap {_ms(drop.resume_gap_ms)}, "
                        "caller-heard silence "
                        f"{_ms(silence.longest_ms if silence else None)} (clear → audio "
                        f"{_ms(silence.clear_to_audio_ms if silence else None)}, hold → reply "
                        f"{_ms(silence.hold_to_reply_ms if silence else None)}), "
                        f"outcome {drop.outcome}")
        finally:
            if server is not None:
                await server.stop()
            await engine.stop()
    return FaultsReport(results)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def summary_rows(report: FaultsReport) -> list[tuple[str, str, str, str, str]]:
    rows = []
    silences = report.silences()
    for name, values in (
            ("resume gap (engine_lost → engine_resumed)", report.resume_gaps()),
            ("clear → first agent audio at the phone", [s.clear_to_audio_ms for s in silences]),
            ("hold line end → resumed reply at the phone",
             [s.hold_to_reply_ms for s in silences if s.hold_to_reply_ms is not None]),
            ("caller-heard silence (the longer of the two)",
             [s.longest_ms for s in silences])):
        rows.append((name, str(len(values)), _ms(percentile(values, 50)),
                     _ms(percentile(values, 95)), _ms(max(values) if values else None)))
    return rows


def print_report(report: FaultsReport, console: Console) -> None:
    table = Table(title=f"Engine drops mid-call: {len(report.drops)} drops, "
                        "modeled engine profile, real time")
    for column in ("", "n", "p50", "p95", "max"):
        table.add_column(column, justify="left" if not column else "right")
    for row in summary_rows(report):
        table.add_row(*row)
    console.print(table)
    console.print(f"target: {_resume_verdict(report)}")
    console.print(_silence_verdict(report))


def _silence_verdict(report: FaultsReport) -> str:
    silences = [s.longest_ms for s in report.silences()]
    worst = max(silences) if silences else None
    met = worst is not None and len(silences) == len(report.drops) and worst <= TARGET_MS
    return (f"no dead air over {TARGET_MS:.0f} ms at the phone: {'met' if met else 'NOT met'} "
            f"(hold line in {report.hold_lines()}/{len(report.drops)} drops, longest silence "
            f"{_ms(worst)})")


SECTION = "faults"  # its section of docs/benchmarks.md


def _resume_verdict(report: FaultsReport) -> str:
    gaps = report.resume_gaps()
    worst = max(gaps) if gaps else None
    met = worst is not None and report.resumed == len(report.drops) and worst <= TARGET_MS
    return (f"resumed within {TARGET_MS:.0f} ms of the drop: {'met' if met else 'NOT met'} "
            f"({report.resumed}/{len(report.drops)} resumed, max {_ms(worst)})")


def markdown(report: FaultsReport, command: str) -> str:
    lines = [
        "## `hotline bench faults`: the engine dropping mid-call", "",
        "Generated by `hotline bench faults`.", "",
        f"- Run: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, `{command}`; "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, shared noisy 2-core machine",
        f"- {len(report.drops)} inbound calls one after another: the Hotline server, the "
        "engine simulator with its **modeled** profile (connect 300 ms, session.update "
        "100 ms, first audio 350 ms + 150 ms per 1000 instruction chars) and the simulated "
        "phone on one event loop, real time (clock speed 1), loopback sockets",
        "- In each call the caller asks something after the greeting; once the agent's reply "
        "is under way (its third 100 ms audio chunk made), the simulator closes the session "
        "with 1011. The caller then stays silent, so the resumed session is asked at once to "
        "go on. The greeting cache is off: the hold line is the built-in English recording",
        "", "| | n | p50 | p95 | max |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {' | '.join(row)} |" for row in summary_rows(report)]
    lines += ["", f"- {_resume_verdict(report)}", f"- {_silence_verdict(report)}"]
    return "\n".join(lines) + "\n"


def bench_faults(drops: int, console: Console, command: str,
                 output: Path | None = None) -> FaultsReport:
    report = asyncio.run(run_faults(drops, console))
    print_report(report, console)
    if output is not None:
        write_section(output, SECTION, markdown(report, command))
        console.print(f"written: {output}")
    return report
