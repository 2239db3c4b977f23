"""A business's recording settings: off and 30 days by default, read from and written to
YAML unchanged, and checked (a retention of whole days, 1 to 3650) wherever they enter."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from hotline.business import BusinessConfig
from hotline.business_yaml import dump_business_yaml, load_businesses_yaml
from hotline.errors import InvalidBusiness
from hotline.store.validation import check_business
from tests.factories import make_business
from tests.test_business_yaml import BASE


def load(text: str, tmp_path: Path) -> list[BusinessConfig]:
    path = tmp_path / "businesses.yaml"
    path.write_text(text, encoding="utf-8")
    return load_businesses_yaml(path)


def test_recording_is_off_and_kept_30_days_by_default(tmp_path: Path) -> None:
    (business,) = load(BASE, tmp_path)
    assert (business.recording, business.recording_retention_days) == (False, 30)


def test_recording_settings_round_trip(tmp_path: Path) -> None:
    (business,) = load(BASE + "    recording: true\n    recording_retention_days: 90\n",
                       tmp_path)
    assert (business.recording, business.recording_retention_days) == (True, 90)
    text = dump_business_yaml(business)
    assert "  recording: true" in text.splitlines()
    assert "  recording_retention_days: 90" in text.splitlines()
    assert load(text, tmp_path) == [business]


BAD = {
    "recording not a flag": ("    recording: yes please\n",
                             "recording: expected true or false, not 'yes please'"),
    "retention zero": ("    recording_retention_days: 0\n",
                       "recording_retention_days: 0 must be a whole number of days from 1"),
    "retention fractional": ("    recording_retention_days: 1.5\n",
                             "recording_retention_days: expected a whole number, not 1.5"),
    "retention too long": ("    recording_retention_days: 3651\n",
                           "recording_retention_days: 3651 must be a whole number of days"),
    "retention misspelled": ("    recording_retention: 3\n",
                             "recording_retention: unknown field"),
}


@pytest.mark.parametrize(("extra", "message"), BAD.values(), ids=BAD.keys())
def test_bad_recording_settings_are_refused_naming_the_field(
        tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(InvalidBusiness, match=re.escape(message)):
        load(BASE + extra, tmp_path)


@pytest.mark.parametrize("days", [0, -1, 3651, True])
def test_check_business_refuses_a_retention_out_of_range(days: int) -> None:
    with pytest.raises(InvalidBusiness, match=r"^recording_retention_days: "):
        check_business(replace(make_business(), recording_retention_days=days))


def test_check_business_keeps_valid_recording_settings() -> None:
    checked = check_business(make_business(recording=True, recording_retention_days=3650))
    assert (checked.recording, checked.recording_retention_days) == (True, 3650)
