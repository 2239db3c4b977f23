"""Each `hotline bench …` command rewrites only its own section of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

from hotline.benchmarks.doc_sections import markers, write_section


def test_a_section_replaces_its_earlier_run_and_keeps_the_others(tmp_path: Path) -> None:
    report = tmp_path / "docs" / "benchmarks.md"
    write_section(report, "greeting", "## greeting\n\nrun 1\n")
    write_section(report, "apology", "## apology\n\nrun 1\n")
    write_section(report, "faults", "## faults\n\nrun 1\n")
    write_section(report, "greeting", "## greeting\n\nrun 2\n")
    text = report.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n")
    for name in ("greeting", "apology", "faults"):
        start, end = markers(name)
        assert text.count(start) == 1 and text.count(end) == 1
    assert "run 2" in text and text.count("run 1") == 2
    # The order stays: the greeting's section is still the first.
    assert text.index("## greeting") < text.index("## apology") < text.index("## faults")


def test_text_outside_the_sections_is_kept(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\nNotes by hand.\n", encoding="utf-8")
    write_section(report, "greeting", "figures")
    write_section(report, "greeting", "new figures")
    text = report.read_text(encoding="utf-8")
    assert "Notes by hand." in text and "new figures" in text and "\nfigures" not in text
