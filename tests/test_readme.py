"""The README's configuration table and the settings stay in step."""

from __future__ import annotations

import re
from pathlib import Path

from hotline.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_documented_and_nothing_else() -> None:
    text = README.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (`HOTLINE_[^|]+)\|", text, re.MULTILINE)  # a row may name two
    documented = {name for row in rows for name in re.findall(r"`(HOTLINE_[A-Z0-9_]+)`", row)}
    settings = {f"HOTLINE_{name.upper()}" for name in Settings.model_fields}
    assert sorted(settings - documented) == []  # add a row to the README's table
    assert sorted(documented - settings) == []  # a row for a setting that is gone
