"""deploy/hotline.service: the README's unit, with a stop timeout longer than the drain."""

from __future__ import annotations

import re
from pathlib import Path

from hotline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_unit_is_the_readme_one_and_outlasts_the_drain() -> None:
    readme_unit = re.search(r"```ini\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert readme_unit is not None
    shipped = (ROOT / "deploy" / "hotline.service").read_text()
    assert shipped.endswith(readme_unit.group(1))
    values = dict(re.findall(r"^(\w+)=(.*)$", shipped, re.M))
    assert values["KillSignal"] == "SIGTERM" and values["Restart"] == "on-failure"
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    drain_s = defaults.drain_timeout_s + defaults.goodbye_cap_s
    assert int(values["TimeoutStopSec"]) >= drain_s + 20
