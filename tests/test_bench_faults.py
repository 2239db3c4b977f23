"""`hotline bench faults`: its measures from a call's timeline and the phone's side, and one
real drop through the whole stack (modeled engine profile, real time)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hotline.benchmarks.faults import (
    TARGET_MS,
    FaultsReport,
    heard_gap_ms,
    markdown,
    resume_gap_ms,
    run_faults,
)
from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord, TimelineStage
from hotline.sim.call_result import ClearRecord, MediaReceived, PhoneCallResult


def test_the_resume_gap_is_read_from_the_timeline() -> None:
    record = CallRecord("CA1", "acme", "inbound", "+1", "+2", "completed", Outcome.COMPLETED,
                        datetime.now(UTC), None, timeline=[
                            TimelineStage("engine_lost", 5000.0, "close code 1011"),
                            TimelineStage("engine_resumed", 5312.5, "gap 312 ms")])
    assert resume_gap_ms(record) == 312.5
    record.timeline.pop()
    assert resume_gap_ms(record) is None


def test_the_heard_gap_runs_from_the_clear_after_the_drop_to_the_next_audio() -> None:
    result = PhoneCallResult("CA1", "AC1", "inbound", "+1", "+2")
    result.clears = [ClearRecord(9.0, 0, 0, []), ClearRecord(10.0, 0, 0, [])]
    result.media_received = [MediaReceived(9.5, 160), MediaReceived(11.25, 160)]
    assert heard_gap_ms(result, dropped_at=9.9) == 1250.0
    assert heard_gap_ms(result, dropped_at=10.5) is None  # no clear after the drop


@pytest.mark.sockets
async def test_one_drop_through_the_stack_is_resumed_within_the_target() -> None:
    report = await run_faults(1)
    assert report.resumed == 1
    [gap] = report.resume_gaps()
    assert 0 < gap < TARGET_MS * 3  # generous: a shared machine (the bench reports the figure)
    assert report.drops[0].outcome == "completed"
    assert "| resume gap" in markdown(report, "hotline bench faults --drops 1")
    assert isinstance(report, FaultsReport)
