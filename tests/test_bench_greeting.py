"""The greeting benchmark measures what it says: each strategy really behaves as named,
as the engine simulator saw it (its received events), and the report is built from runs.

Small runs (2 calls, one at a time) on the zero profile with two changes: the engine's
audio deltas are unpaced (`realtime_factor=0`), so that the greeting's `response.done`, and
the prompt upgrade after it, happen within the 300 ms each call listens; and connecting
takes 50 ms. The phone also waits 50 ms between the TwiML and opening the stream, as
Twilio does (the simulated phone alone opens it at once). So "the engine connection began
before / after the stream's `start`" is decided by the order of events, not by a race
between two loopback handshakes. No absolute times are asserted: only the order of events
and what the engine was sent.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from hotline.benchmarks.engine_records import (
    SessionRecord,
    connect_started_at,
    covered_ms,
    first_received,
    first_sent,
)
from hotline.benchmarks.greeting import run_strategy
from hotline.benchmarks.report import render_markdown
from hotline.benchmarks.samples import CallSample, StrategyRun
from hotline.benchmarks.simulator_process import ProcessSimulators
from hotline.benchmarks.stats import BenchResult, percentile
from hotline.benchmarks.strategies import STRATEGIES
from hotline.benchmarks.tenants import bench_business, lane_of
from hotline.prompts import compact_prompt, full_prompt
from hotline.sim.engine import LatencyProfile

COMPACT_MAX_CHARS = 900  # the bench business: compact ~840 chars, full ~3370
PROFILE = dataclasses.replace(LatencyProfile.zero(), connect_ms=50, realtime_factor=0.0)
STREAM_GAP_MS = 50


async def bench(strategy: str, tmp_path: Path) -> StrategyRun:
    run = await run_strategy(STRATEGIES[strategy], "zero", calls=2, concurrency=1,
                             workdir=tmp_path / strategy, profile=PROFILE,
                             stream_gap_ms=STREAM_GAP_MS)
    assert len(run.samples) == 2
    for sample in run.samples:
        assert sample.ok, sample.problem
        assert sample.session is not None and sample.sessions_matched == 1
    return run


def instruction_updates(session: SessionRecord) -> list[tuple[float, str]]:
    return [(e.at, e.event["session"]["instructions"]) for e in session.received
            if e.type == "session.update" and "instructions" in e.event.get("session", {})]


def times(sample: CallSample) -> tuple[float, float]:
    phone = sample.phone
    assert phone.start_sent_at is not None and phone.first_media_at is not None
    return phone.start_sent_at, phone.first_media_at


def session_of(sample: CallSample) -> SessionRecord:
    assert sample.session is not None
    return sample.session


def connect_began(session: SessionRecord) -> float:
    began = connect_started_at(session, PROFILE)
    assert began is not None
    return began


# -- the strategies are what they say --------------------------------------------------------
@pytest.mark.sockets
async def test_naive_connects_at_start_with_the_full_prompt(tmp_path: Path) -> None:
    run = await bench("naive", tmp_path)
    for sample in run.samples:
        session = session_of(sample)
        start, first_media = times(sample)
        business = bench_business(sample.lane)
        updates = instruction_updates(session)
        assert len(updates[0][1]) > COMPACT_MAX_CHARS
        assert all(text != compact_prompt(business, business.greeting) for _, text in updates)
        # The engine heard nothing of this call before its stream started.
        assert connect_began(session) > start
        assert session.received[0].at > start
        # Then: the greeting asked for, with the full prompt already in force.
        requested = first_received(session, "response.create")
        assert requested is not None and updates[0][0] <= requested < first_media
        assert sample.live_greeting and sample.engine_ms is not None


@pytest.mark.sockets
async def test_naive_first_response_is_the_greeting(tmp_path: Path) -> None:
    # A fair baseline: naive's one prompt carries the greeting, so what the engine says
    # first is the greeting, not a canned reply to a prompt that says it was said.
    run = await bench("naive", tmp_path)
    for sample in run.samples:
        session = session_of(sample)
        business = bench_business(sample.lane)
        (_, prompt), *_ = instruction_updates(session)
        assert f'"{business.greeting}"' in prompt and "already been said" not in prompt
        said = [e.event["transcript"] for e in session.sent
                if e.type == "response.output_audio_transcript.done"]
        assert said, "the engine finished no response"
        assert said[0] == business.greeting


@pytest.mark.sockets
async def test_seed_greets_with_the_compact_prompt_then_upgrades(tmp_path: Path) -> None:
    run = await bench("seed", tmp_path)
    for sample in run.samples:
        session = session_of(sample)
        start, first_media = times(sample)
        business = bench_business(sample.lane)
        updates = instruction_updates(session)
        assert updates[0][1] == compact_prompt(business, business.greeting)
        assert len(updates[0][1]) <= COMPACT_MAX_CHARS
        assert connect_began(session) > start  # connected at start, not before
        requested = first_received(session, "response.create")
        assert requested is not None and updates[0][0] <= requested < first_media
        # The full prompt only after the greeting's response.done.
        greeting_done = first_sent(session, "response.done")
        assert greeting_done is not None
        upgrades = [(at, text) for at, text in updates if len(text) > COMPACT_MAX_CHARS]
        assert upgrades, "the prompt was never upgraded"
        assert upgrades[0][1] == full_prompt(business)
        assert all(at >= greeting_done for at, _ in upgrades)


@pytest.mark.sockets
async def test_hotline_plays_the_cached_greeting_on_a_warm_session(tmp_path: Path) -> None:
    run = await bench("hotline", tmp_path)
    for sample in run.samples:
        session = session_of(sample)
        start, _ = times(sample)
        business = bench_business(sample.lane)
        # Warm: the connection began before the stream started (in the webhook).
        assert connect_began(session) < start
        # Cached: the engine never produced the greeting; it was told it had been said.
        assert first_received(session, "response.create") is None
        assert sample.live_greeting is False
        said = [e for e in session.received if e.type == "conversation.item.create"
                and business.greeting in orjson.dumps(e.event).decode()]
        assert said, "no conversation.item.create carried the greeting text"


@pytest.mark.sockets
async def test_hotline_warm_greets_live_on_a_prepared_session(tmp_path: Path) -> None:
    run = await bench("hotline-warm", tmp_path)
    for sample in run.samples:
        session = session_of(sample)
        start, first_media = times(sample)
        business = bench_business(sample.lane)
        assert connect_began(session) < start
        updates = instruction_updates(session)
        assert updates[0][1] == compact_prompt(business, business.greeting)
        requested = first_received(session, "response.create")
        assert requested is not None and start < requested < first_media
        assert updates[0][0] <= requested
        assert sample.live_greeting


# -- the report -------------------------------------------------------------------------------
@pytest.mark.sockets
async def test_report_has_a_row_per_strategy(tmp_path: Path) -> None:
    import datetime

    runs = {("zero", name, "inbound"): await bench(name, tmp_path)
            for name in ("naive", "seed")}
    result = BenchResult(2, 1, ["zero"], ["naive", "seed"],
                         datetime.datetime.now(datetime.UTC), runs, 1.0)
    markdown = render_markdown(result, command="hotline bench greeting --calls 2")
    assert "| `naive` | inbound | 2/2 |" in markdown
    assert "| `seed` | inbound | 2/2 |" in markdown
    assert "shared, noisy 2-core machine" in markdown and "### Definitions" in markdown


# -- outbound and voicemail ------------------------------------------------------------------
@pytest.mark.sockets
async def test_outbound_calls_are_placed_through_the_api_and_timed_by_the_callee(
        tmp_path: Path) -> None:
    import datetime

    run = await run_strategy(STRATEGIES["hotline"], "zero", calls=2, concurrency=1,
                             workdir=tmp_path, profile=PROFILE, direction="outbound",
                             amd_ms=200)
    assert run.direction == "outbound" and len(run.samples) == 2
    for sample in run.samples:
        assert sample.ok, sample.problem
        phone = sample.phone
        # Placed by the server through the Twilio REST API; answered; AMD said human.
        assert phone.direction == "outbound-api"
        assert phone.webhook_url is not None and "outbound=" in phone.webhook_url
        assert phone.amd_answered_by == "human"
        assert sample.start_to_first_media_ms is not None
    # The greeting cache was filled first (inbound greeting, outbound greeting, voicemail),
    # and the report says so and how long it took.
    assert run.render is not None and run.render.greetings == 3
    assert run.render.total_s >= run.render.waited_s >= 0
    result = BenchResult(2, 1, ["zero"], ["hotline"], datetime.datetime.now(datetime.UTC),
                         {("zero", "hotline", "outbound"): run}, 1.0, directions=["outbound"],
                         renders={("zero", "hotline"): run.render})
    markdown = render_markdown(result, command="hotline bench greeting --direction outbound")
    assert "| `hotline` | outbound | 2/2 |" in markdown
    assert "### Greeting renders before measuring" in markdown
    assert "| zero | `hotline` | outbound | (b) p99 |" not in markdown  # modeled only


@pytest.mark.sockets
async def test_voicemail_is_timed_from_the_machines_beep(tmp_path: Path) -> None:
    run = await run_strategy(STRATEGIES["hotline"], "zero", calls=1, concurrency=1,
                             workdir=tmp_path, profile=PROFILE, direction="voicemail")
    (sample,) = run.samples
    assert sample.problem is None and run.ok == [sample]
    phone = sample.phone
    assert phone.amd_answered_by == "machine_end_beep" and phone.beep_ended_at is not None
    assert sample.voicemail_media_at is not None
    assert sample.voicemail_media_at >= phone.beep_ended_at
    assert sample.beep_to_voicemail_ms is not None and sample.beep_to_voicemail_ms >= 0


def test_cli_registers_bench_greeting() -> None:
    import hotline.cli.bench  # noqa: F401 (registers `bench` on the app)
    from hotline.cli import app

    result = CliRunner().invoke(app, ["bench", "greeting", "--help"])
    assert result.exit_code == 0
    for option in ("--calls", "--concurrency", "--profile", "--strategies", "--output",
                   "--direction", "--voicemail-calls", "--amd-ms"):
        assert option in result.output


# -- the arithmetic ---------------------------------------------------------------------------
def test_covered_ms_is_the_union_inside_the_window() -> None:
    spans = [(0.0, 0.3), (0.2, 0.4), (0.6, 1.0), (2.0, 3.0)]
    assert covered_ms(spans, 0.1, 0.8) == pytest.approx(300 + 200)
    assert covered_ms([], 0, 1) == 0
    assert covered_ms([(5.0, 6.0)], 0, 1) == 0


def test_percentile_interpolates() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None


def test_each_lane_is_recognised_from_its_instructions() -> None:
    for lane in range(20):
        business = bench_business(lane)
        assert lane_of(compact_prompt(business, business.greeting)) == lane
        assert lane_of(full_prompt(business)) == lane
    assert lane_of("You read texts aloud exactly as written, nothing else.") is None
    assert len({bench_business(lane).phone_numbers[0] for lane in range(20)}) == 20


@pytest.mark.sockets
async def test_simulators_can_run_in_a_child_process(tmp_path: Path) -> None:
    # What `hotline bench greeting` does by default: results and records cross processes.
    async with ProcessSimulators(loop="asyncio") as simulators:
        run = await run_strategy(STRATEGIES["seed"], "zero", calls=1, concurrency=1,
                                 workdir=tmp_path, profile=PROFILE, simulators=simulators)
    (sample,) = run.samples
    assert sample.ok, sample.problem
    session = session_of(sample)
    assert connect_began(session) > times(sample)[0]
    assert sample.overhead_ms is not None and sample.engine_ms is not None
