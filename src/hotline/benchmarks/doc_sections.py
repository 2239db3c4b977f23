"""docs/benchmarks.md is shared by every `hotline bench …` command: each one owns a section
between two markers and rewrites only that, so running one never drops another's figures."""

from __future__ import annotations

from pathlib import Path

TITLE = "# Benchmarks\n"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- hotline bench {name}: start -->", f"<!-- hotline bench {name}: end -->"


def write_section(path: Path, name: str, body: str) -> None:
    """Put `body` in the report as benchmark `name`'s section, replacing an earlier run's
    and keeping everything else; a new section goes at the end."""
    start, end = markers(name)
    section = f"{start}\n{body.strip()}\n{end}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else TITLE
    if start in text and end in text:
        before = text[:text.index(start)]
        after = text[text.index(end) + len(end):].lstrip("\n")
        text = before + section + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
