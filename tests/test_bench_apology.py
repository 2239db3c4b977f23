"""`hotline bench apology` measures real calls against a refusing engine, and its section
replaces an earlier run's in the report without touching the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotline.benchmarks.apology import (
    BUDGET_MS,
    SECTION,
    EngineFault,
    bench_apology,
    render_section,
)
from hotline.benchmarks.doc_sections import markers, write_section

pytestmark = pytest.mark.sockets


async def test_the_apology_bench_measures_every_call_and_keeps_the_report(
        tmp_path: Path) -> None:
    result = await bench_apology(calls=2, concurrency=2)
    assert [s.outcome for s in result.samples] == ["engine_unavailable"] * 2
    delays = result.delays()
    assert len(delays) == 2 and all(0 < d < BUDGET_MS * 5 for d in delays)
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\n## greeting\n\nkept\n", encoding="utf-8")
    write_section(report, SECTION, render_section(result, "hotline bench apology --calls 2"))
    write_section(report, SECTION, render_section(result, "hotline bench apology --calls 2"))
    text = report.read_text(encoding="utf-8")
    start, end = markers(SECTION)
    assert text.count(start) == 1 and text.count(end) == 1
    assert "kept" in text and "first apology frame received" in text


async def test_a_hanging_engine_is_cut_at_the_connect_budget_then_apologised_for() -> None:
    result = await bench_apology(calls=1, concurrency=1, fault=EngineFault.HANGING)
    [sample] = result.samples
    assert sample.outcome == "engine_unavailable"
    # The handshake really hung (a refused one is learnt in milliseconds): the apology came
    # once the connect budget (900 ms of wall time by default) had run out.
    assert sample.start_to_apology_ms is not None and sample.start_to_apology_ms > 450
