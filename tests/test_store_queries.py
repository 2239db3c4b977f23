"""The owner's queries against a real database (SQLite, and PostgreSQL under `make test`):
call search with keyset paging, one call with its tool calls and recording, messages with
their handled state, and a business's stats."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from hotline.core.greeting_path import GreetingPath
from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord, LeadMessage, TimelineStage, TranscriptTurn
from hotline.errors import BusinessNotFound
from hotline.store import CallDirection, CallQuery, InvalidCursor, Store, models
from hotline.store.call_views import (
    MAX_PAGE_SIZE,
    decode_cursor,
    encode_cursor,
    percentile,
    tool_calls,
)
from tests.test_store import T0, business, call

# The greeting paths as the timeline records them (see hotline.core.greeting_path).
CACHED = (TimelineStage("stream_start", 400.0), TimelineStage("greeting_requested", 400.0,
          "cached audio 2100 ms"), TimelineStage("first_audio_to_caller", 403.0))


def live(path: str, greeting_ms: float) -> tuple[TimelineStage, ...]:
    return (TimelineStage("stream_start", 400.0),
            TimelineStage("greeting_requested", 401.0, "live, compact prompt 800 chars"),
            TimelineStage("engine_ready", 402.0, path),
            TimelineStage("first_audio_to_caller", 400.0 + greeting_ms))


def said(*texts: str) -> list[TranscriptTurn]:
    return [TranscriptTurn("caller" if i % 2 else "agent", text, i * 1000, i * 1000 + 900)
            for i, text in enumerate(texts)]


async def two_businesses(store: Store) -> None:
    await store.save_business(business("acme", "+14155550111"))
    await store.save_business(business("bolt", "+14155550112", timezone="Asia/Jerusalem"))


async def seed_calls(store: Store) -> None:
    await two_businesses(store)
    calls: list[tuple[str, str, str, Outcome | None, int, list[TranscriptTurn]]] = [
        ("CA1", "acme", "inbound", Outcome.COMPLETED, 0, said("Acme, hello", "My SINK leaks")),
        ("CA2", "acme", "outbound", Outcome.VOICEMAIL, 60, said("Hi Dana, a reminder")),
        ("CA3", "bolt", "inbound", Outcome.COMPLETED, 120, said("Bolt", "the sink again")),
        ("CA4", "acme", "inbound", Outcome.TRANSFERRED, 180, said("Acme", "100% sure_thing")),
        ("CA5", "acme", "inbound", None, 240, said("Acme, hello")),
    ]
    for sid, slug, direction, outcome, minutes, transcript in calls:
        await store.save_call(call(sid, business_slug=slug, direction=direction,
                                   outcome=outcome, transcript=transcript,
                                   started_at=T0 + timedelta(minutes=minutes)))


async def sids(store: Store, **filters: Any) -> list[str]:
    page = await store.search_calls(CallQuery(**filters), limit=MAX_PAGE_SIZE)
    assert page.next_cursor is None
    return [view.record.call_sid for view in page.calls]


# -- search ------------------------------------------------------------------------------------
async def test_search_filters_each_and_together(store: Store) -> None:
    await seed_calls(store)
    assert await sids(store) == ["CA5", "CA4", "CA3", "CA2", "CA1"]
    assert await sids(store, business_slug="acme") == ["CA5", "CA4", "CA2", "CA1"]
    assert await sids(store, business_slug="nobody") == []
    assert await sids(store, direction=CallDirection.OUTBOUND) == ["CA2"]
    assert await sids(store, outcome="completed") == ["CA3", "CA1"]
    # From inclusive, to exclusive.
    assert await sids(store, started_from=T0 + timedelta(minutes=60),
                      started_to=T0 + timedelta(minutes=180)) == ["CA3", "CA2"]
    # Another timezone, the same moment.
    tel_aviv = (T0 + timedelta(minutes=180)).astimezone(__import__("zoneinfo").ZoneInfo(
        "Asia/Jerusalem"))
    assert await sids(store, started_from=tel_aviv) == ["CA5", "CA4"]
    # The transcript's text: any turn, case-insensitive, LIKE's wildcards taken literally.
    assert await sids(store, text="sink") == ["CA3", "CA1"]
    assert await sids(store, text="SINK", business_slug="acme") == ["CA1"]
    assert await sids(store, text="100%") == ["CA4"]
    assert await sids(store, text="0%") == ["CA4"]
    assert await sids(store, text="e_t") == ["CA4"]  # "sure_thing", not "re thing"
    assert await sids(store, text="%") == ["CA4"]
    assert await sids(store, text="hello", direction=CallDirection.INBOUND,
                      outcome="completed") == ["CA1"]


async def test_search_pages_with_a_cursor_newest_first_ties_by_id(store: Store) -> None:
    await two_businesses(store)
    # Seven calls, three of them at the very same moment: the id breaks the tie, also
    # between two pages (pages of 2 end between CA3 and CA2, both at minute 10).
    moments = [0, 10, 10, 10, 20, 30, 40]
    for n, minutes in enumerate(moments):
        await store.save_call(call(f"CA{n}", started_at=T0 + timedelta(minutes=minutes)))
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await store.search_calls(cursor=cursor, limit=2)
        pages += 1
        seen += [view.record.call_sid for view in page.calls]
        if pages == 1:  # a call that comes in meanwhile is not in the later pages
            await store.save_call(call("CAnew", started_at=T0 + timedelta(hours=1)))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ["CA6", "CA5", "CA4", "CA3", "CA2", "CA1", "CA0"]
    assert pages == 4
    first = await store.search_calls(limit=2)
    assert [v.record.call_sid for v in first.calls] == ["CAnew", "CA6"]
    # A page that ends exactly at the last call says there is no next one.
    assert (await store.search_calls(limit=8)).next_cursor is None
    assert (await store.search_calls(limit=7)).next_cursor is not None


def _raw_cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


async def test_a_bad_cursor_or_page_size_is_refused(store: Store) -> None:
    # A tampered cursor whose moment leaves datetime's range in UTC, or whose id no
    # database integer holds, is refused too (it was a 500: OverflowError, a driver error).
    tampered = [_raw_cursor(["0001-01-01T00:00:00+01:00", 1]),
                _raw_cursor(["9999-12-31T23:59:59-01:00", 1]),
                _raw_cursor([T0.isoformat(), 2**63])]
    for cursor in ("nonsense", "", encode_cursor(T0, 1)[:-3], "W10", "WyJ4IiwgMV0",
                   *tampered):
        with pytest.raises(InvalidCursor):
            await store.search_calls(cursor=cursor or "=")
    for limit in (0, MAX_PAGE_SIZE + 1):
        with pytest.raises(ValueError, match="limit"):
            await store.search_calls(limit=limit)
    assert decode_cursor(encode_cursor(T0, 42)) == (T0, 42)


async def test_the_page_gives_each_calls_greeting_duration_and_recording(store: Store) -> None:
    await two_businesses(store)
    await store.save_call(call("CA1", timeline=list(CACHED)))
    await store.save_call(call("CA2", timeline=list(live("warm", 650.0)),
                               started_at=T0 + timedelta(minutes=1),
                               ended_at=T0 + timedelta(minutes=1, seconds=42)))
    await store.save_call(call("CA3", timeline=[], ended_at=None,
                               started_at=T0 + timedelta(minutes=2)))
    await store.record_call_status("CA1", "completed", at=T0, sequence=3, duration_s=57)
    await set_recording(store, "CA2", "recordings/CA2.wav", 41_000)
    views = {v.record.call_sid: v for v in (await store.search_calls()).calls}
    assert (views["CA1"].greeting_path, views["CA1"].greeting_ms) == (GreetingPath.CACHED, 3.0)
    assert (views["CA2"].greeting_path, views["CA2"].greeting_ms) == (GreetingPath.WARM, 650.0)
    assert (views["CA3"].greeting_path, views["CA3"].greeting_ms) == (None, None)
    assert views["CA1"].duration_s == 57.0  # Twilio's, when it came
    assert views["CA2"].duration_s == 42.0  # else from start to end
    assert views["CA3"].duration_s is None
    recording = views["CA2"].recording
    assert recording is not None and (recording.file, recording.ms) == ("recordings/CA2.wav",
                                                                          41_000)
    assert views["CA1"].recording is None
    assert all(v.record.transcript == [] and v.tool_calls == () for v in views.values())


async def set_recording(store: Store, call_sid: str, file: str | None, ms: int | None,
                        deleted_at: datetime | None = None) -> None:
    """What the recorder (and the retention sweeper) write: another part's job."""
    async with store.engine.begin() as connection:
        await connection.execute(update(models.Call).where(models.Call.call_sid == call_sid)
                                 .values(recording_file=file, recording_ms=ms,
                                         recording_deleted_at=deleted_at))


# -- one call ------------------------------------------------------------------------------------
TOOL_TIMELINE = [
    TimelineStage("webhook_received", 0.0),
    TimelineStage("stream_start", 400.0),
    TimelineStage("tool_called", 5400.0, 'check_hours {"day":"mon"}'),
    TimelineStage("tool_called", 5400.5, 'take_message {"name":"Dana"}'),
    TimelineStage("tool_done", 5410.0, 'take_message: error {"error":"no phone"}'),
    TimelineStage("tool_done", 5500.0, 'check_hours: ok {"open_now":true}'),
    TimelineStage("tool_called", 9000.0, "end_call"),  # cut off: never answered
    TimelineStage("tool_called", 9900.0, "check_hours"),  # written before the JSON was
    TimelineStage("tool_done", 9950.0, "check_hours: ok"),
]


async def test_one_call_with_transcript_timeline_tool_calls_and_recording(store: Store) -> None:
    await two_businesses(store)
    await store.save_call(call("CA1", timeline=TOOL_TIMELINE, outcome=Outcome.TRANSFERRED))
    deleted = T0 + timedelta(days=30)
    await set_recording(store, "CA1", None, 41_000, deleted)
    view = await store.call_view("CA1")
    assert view is not None
    assert view.record.outcome is Outcome.TRANSFERRED
    assert [t.text for t in view.record.transcript] == [t.text for t in call().transcript]
    assert view.record.timeline == TOOL_TIMELINE
    assert [(t.name, t.arguments, t.result, t.error) for t in view.tool_calls] == [
        ("check_hours", '{"day":"mon"}', '{"open_now":true}', False),
        ("take_message", '{"name":"Dana"}', '{"error":"no phone"}', True),
        ("end_call", None, None, None),
        ("check_hours", None, None, False),
    ]
    # `at`: the call's start (the stream's) plus the time since the stream started.
    assert view.tool_calls[0].at == T0 + timedelta(seconds=5)
    assert view.tool_calls[0].at_ms == 5400.0
    assert view.recording is not None
    assert (view.recording.file, view.recording.ms, view.recording.deleted_at) == (
        None, 41_000, deleted)
    assert await store.call_view("CAnone") is None
    assert await store.get_call("CA1") == view.record  # the same record as before
    # Asked for one business's, another's call is not there (not loaded, then refused).
    assert await store.call_view("CA1", business_slug="bolt") is None
    assert await store.get_call("CA1", business_slug="bolt") is None
    assert await store.call_view("CA1", business_slug="acme") == view
    assert await store.get_call("CA1", business_slug="acme") == view.record


def test_tool_calls_skip_what_does_not_parse() -> None:
    record = call(timeline=[TimelineStage("tool_done", 1.0, "gibberish"),
                            TimelineStage("tool_done", 2.0, "lookup: ok"),
                            TimelineStage("tool_called", 3.0, "lookup {}")])
    assert [(t.name, t.arguments, t.error) for t in tool_calls(record)] == [
        ("lookup", "{}", None)]


# -- messages --------------------------------------------------------------------------------
def lead(name: str) -> LeadMessage:
    return LeadMessage(name, "+972501234567", "Call me back", 9_000)


async def test_messages_are_marked_handled_and_to_do_again(store: Store) -> None:
    await two_businesses(store)
    for n, slug in enumerate(("acme", "bolt", "acme")):
        await store.save_call(call(f"CA{n}", business_slug=slug, messages=[lead(f"c{n}")],
                                   started_at=T0 + timedelta(minutes=n)))
    assert [m.handled_at for m in await store.list_messages()] == [None, None, None]
    before = datetime.now(UTC)
    marked = await store.set_message_handled("CA0-1", True)
    assert marked is not None and marked.handled_at is not None
    assert marked.handled_at >= before - timedelta(seconds=1)
    again = await store.set_message_handled("CA0-1", True)
    assert again is not None and again.handled_at == marked.handled_at  # the first date kept
    assert [m.message_id for m in await store.list_messages(handled=True)] == ["CA0-1"]
    assert [m.message_id for m in await store.list_messages(handled=False)] == ["CA2-1",
                                                                                "CA1-1"]
    assert [m.message_id for m in await store.list_messages("acme", handled=False)] == [
        "CA2-1"]
    # Scoped: another business's message is not found, and is left as it was.
    assert await store.set_message_handled("CA1-1", True, business_slug="acme") is None
    assert await store.set_message_handled("CA9-1", True) is None
    assert (await store.get_message("CA1-1")).handled_at is None  # type: ignore[union-attr]
    undone = await store.set_message_handled("CA0-1", False, business_slug="acme")
    assert undone is not None and undone.handled_at is None
    assert await store.list_messages(handled=True) == []
    # The call's record written again (a journal replayed) keeps the handled state.
    handled = await store.set_message_handled("CA2-1", True)
    assert handled is not None
    await store.save_call(call("CA2", messages=[lead("c2"), lead("later")],
                               started_at=T0 + timedelta(minutes=2)))
    assert [(m.message_id, m.handled_at) for m in await store.list_messages("acme")] == [
        ("CA2-2", None), ("CA2-1", handled.handled_at), ("CA0-1", None)]


# -- stats -----------------------------------------------------------------------------------
async def test_stats_per_day_outcomes_latency_and_duration(store: Store) -> None:
    await two_businesses(store)
    # bolt is in Asia/Jerusalem (UTC+2 in March): 23:30 UTC on Mar 1 is Mar 2 there.
    day1 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    late = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    day3 = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
    warm = [100.0, 200.0, 300.0, 400.0, 1000.0]
    calls: list[CallRecord] = []
    for n, ms in enumerate(warm):
        calls.append(call(f"W{n}", business_slug="bolt", started_at=day1 + timedelta(minutes=n),
                          ended_at=day1 + timedelta(minutes=n, seconds=30),
                          timeline=list(live("warm", ms))))
    calls += [
        call("C1", business_slug="bolt", started_at=late, ended_at=late + timedelta(seconds=90),
             timeline=list(live("cold", 900.0)), outcome=Outcome.TRANSFERRED),
        call("K1", business_slug="bolt", started_at=day3, ended_at=None, outcome=None,
             timeline=list(CACHED)),
        # Outside the range, or another business's: not counted.
        call("X1", business_slug="bolt", started_at=day3 + timedelta(days=5)),
        call("X2", business_slug="acme", started_at=day1),
    ]
    for record in calls:
        await store.save_call(record)
    start = datetime(2026, 2, 28, 22, 0, tzinfo=UTC)  # Mar 1, 00:00 in Jerusalem
    end = datetime(2026, 3, 3, 22, 0, tzinfo=UTC)  # Mar 4, 00:00 in Jerusalem
    stats = await store.business_stats("bolt", start, end)
    assert stats.timezone == "Asia/Jerusalem" and stats.calls == 7
    assert stats.per_day == [(date(2026, 3, 1), 5), (date(2026, 3, 2), 1),
                             (date(2026, 3, 3), 1)]
    assert stats.outcomes == {"completed": 5, "transferred": 1, "unknown": 1}
    by_path = {g.path: g for g in stats.greeting}
    assert [g.path for g in stats.greeting] == list(GreetingPath)
    assert by_path[GreetingPath.WARM].calls == 5
    assert by_path[GreetingPath.WARM].p50_ms == 300.0
    assert by_path[GreetingPath.WARM].p95_ms == pytest.approx(880.0)  # 400 + 0.8 * 600
    assert (by_path[GreetingPath.COLD].p50_ms, by_path[GreetingPath.COLD].p95_ms) == (900.0,
                                                                                      900.0)
    assert (by_path[GreetingPath.CACHED].calls, by_path[GreetingPath.CACHED].p50_ms) == (1, 3.0)
    assert stats.average_duration_s == pytest.approx((5 * 30 + 90) / 6)  # of the ended calls

    empty = await store.business_stats("acme", start, start + timedelta(hours=1))
    assert (empty.calls, empty.per_day, empty.outcomes) == (0, [(date(2026, 2, 28), 0)], {})
    assert all(g.calls == 0 and g.p50_ms is None for g in empty.greeting)
    assert empty.average_duration_s is None


async def test_stats_refuse_an_unknown_business_and_a_bad_range(store: Store) -> None:
    await two_businesses(store)
    with pytest.raises(BusinessNotFound):
        await store.business_stats("nobody", T0, T0 + timedelta(days=1))
    for start, end in ((T0, T0), (T0, T0 - timedelta(days=1)), (T0, T0 + timedelta(days=400)),
                       (T0.replace(tzinfo=None), T0 + timedelta(days=1)),
                       (datetime(1, 1, 1, tzinfo=UTC), datetime(1, 1, 2, tzinfo=UTC))):
        with pytest.raises(ValueError):
            await store.business_stats("acme", start, end)


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0 and percentile([1.0, 2.0], 100) == 2.0
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 95) == pytest.approx(95.05)
