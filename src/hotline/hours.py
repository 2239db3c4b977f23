"""Opening hours: parse a business's weekly hours and answer "are we open now?".

Hours are written per weekday as ``"HH:MM-HH:MM"`` ranges, comma-separated for a split day
(``"08:00-13:00, 16:00-19:00"``), in the business's IANA timezone. A day not listed, or
listed as ``"closed"``, is closed. A range may not cross midnight (write ``"22:00-24:00"``
and ``"00:00-02:00"`` on the next day instead); ``24:00`` ends a day.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

Minutes = tuple[int, int]  # (open, close) in minutes after midnight, close exclusive


def parse_day(text: str) -> tuple[Minutes, ...]:
    """One day's ranges, sorted; `ValueError` says what is wrong."""
    if text.strip().lower() in ("", "closed"):
        return ()
    ranges: list[Minutes] = []
    for part in text.split(","):
        match = _RANGE.match(part)
        if match is None:
            raise ValueError(f"{part.strip()!r} is not a HH:MM-HH:MM range")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
            raise ValueError(f"{part.strip()!r} is not a time of day")
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if end <= start:
            raise ValueError(f"{part.strip()!r} ends before it starts "
                             "(split a range that crosses midnight over two days)")
        ranges.append((start, end))
    ranges.sort()
    for (_, end), (start, _) in pairwise(ranges):
        if start < end:
            raise ValueError(f"{text!r} has overlapping ranges")
    return tuple(ranges)


def weekday_key(day: str) -> str:
    """`Monday`, `mon`, ` MON ` -> `mon`; `ValueError` for anything else."""
    key = day.strip().lower()[:3]
    if key not in WEEKDAYS:
        raise ValueError(f"{day!r} is not a weekday (use {', '.join(WEEKDAYS)})")
    return key


def parse_week(hours: tuple[tuple[str, str], ...]) -> dict[str, tuple[Minutes, ...]]:
    """(weekday, ranges) pairs to a full week; `ValueError` names the bad day, or the days
    listed twice."""
    week: dict[str, tuple[Minutes, ...]] = {day: () for day in WEEKDAYS}
    keys = [weekday_key(day) for day, _ in hours]
    for key, (day, text) in zip(keys, hours, strict=True):
        try:
            week[key] = parse_day(text)
        except ValueError as exc:
            raise ValueError(f"{day}: {exc}") from None
    twice = sorted({key for key in keys if keys.count(key) > 1}, key=WEEKDAYS.index)
    if twice:
        raise ValueError(f"{', '.join(twice)} listed twice")
    return week


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA timezone (e.g. Asia/Jerusalem)") from None


def hours_answer(hours: tuple[tuple[str, str], ...], timezone: str,
                 now: datetime) -> dict[str, Any]:
    """What the agent needs to answer "are you open?": local time, open now or not, when it
    closes or next opens, and the week. `now` must be timezone-aware."""
    week = parse_week(hours)
    local = now.astimezone(check_timezone(timezone))
    minute = local.hour * 60 + local.minute
    today = WEEKDAYS[local.weekday()]
    answer: dict[str, Any] = {
        "timezone": timezone,
        "local_time": f"{DAY_NAMES[local.weekday()]} {local:%H:%M}",
        "open_now": False,
        "week": {DAY_NAMES[i]: _describe(week[day]) for i, day in enumerate(WEEKDAYS)},
    }
    for start, end in week[today]:
        if start <= minute < end:
            answer["open_now"] = True
            answer["closes_at"] = _clock(end)
            return answer
    for offset in range(8):
        day_index = (local.weekday() + offset) % 7
        for start, _ in week[WEEKDAYS[day_index]]:
            if offset == 0 and start <= minute:
                continue
            when = local + timedelta(days=offset)
            answer["next_opening"] = f"{DAY_NAMES[day_index]} {_clock(start)}"
            answer["next_opening_date"] = f"{when:%Y-%m-%d}"
            return answer
    answer["next_opening"] = None  # no hours at all
    return answer


def _describe(ranges: tuple[Minutes, ...]) -> str:
    return ", ".join(f"{_clock(a)}-{_clock(b)}" for a, b in ranges) or "closed"


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
