"""Prometheus /metrics, scraped after real calls (uvicorn, the simulated phone and engine)."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord, TimelineStage
from hotline.metrics import GreetingPath, greeting_latency_s, greeting_path
from tests.factories import TEST_NUMBER, make_business
from tests.stack import running_stack
from tests.test_e2e_calls import CALLER, LISTEN_THEN_HANG_UP, record_of


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_count_calls_and_greeting_latency_by_path(
        database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, [make_business()],
                             greeting_cache=False) as stack:
        records: list[CallRecord] = []
        frames_heard = 0
        for _ in range(2):
            result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER,
                                            script=LISTEN_THEN_HANG_UP)
            frames_heard += len(result.media_received)
            records.append(await record_of(stack, result.call_sid))
        async with httpx.AsyncClient(base_url=stack.server.url) as http:
            response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    scraped = samples(response.text)
    assert scraped[("hotline_active_calls", ())] == 0
    assert scraped[("hotline_calls_total", (("direction", "inbound"),
                                            ("outcome", "completed")))] == 2
    paths = {greeting_path(r) for r in records}
    assert paths == {GreetingPath.WARM}  # the webhook prepared each call's engine session
    latencies = [greeting_latency_s(r) for r in records]
    assert all(lat is not None for lat in latencies)
    count = ("hotline_greeting_latency_seconds_count", (("path", "warm"),))
    total = ("hotline_greeting_latency_seconds_sum", (("path", "warm"),))
    assert scraped[count] == 2
    assert abs(scraped[total] - sum(lat for lat in latencies if lat is not None)) < 1e-6
    # Every agent frame the phones received was counted as sent (the stats are not stored
    # with the record, so the phones' side is the reference).
    assert frames_heard > 0
    assert scraped[("hotline_call_events_total", (("event", "deltas_out"),))] >= frames_heard


def test_the_greeting_path_and_latency_come_from_the_timeline() -> None:
    def record(*stages: tuple[str, float, str]) -> CallRecord:
        from datetime import UTC, datetime
        return CallRecord("CA1", "acme", "inbound", "+1", "+2", "completed",
                          Outcome.COMPLETED, datetime.now(UTC), None,
                          timeline=[TimelineStage(*s) for s in stages])

    cached = record(("stream_start", 100, ""), ("greeting_requested", 100, "cached audio 3000 ms"),
                    ("first_audio_to_caller", 102.5, ""))
    assert greeting_path(cached) is GreetingPath.CACHED and greeting_latency_s(cached) == 0.0025
    cold = record(("stream_start", 100, ""), ("greeting_requested", 100, "live, compact"),
                  ("engine_ready", 500, "cold"), ("first_audio_to_caller", 900, ""))
    assert greeting_path(cold) is GreetingPath.COLD and greeting_latency_s(cold) == 0.8
    silent = record(("stream_start", 100, ""))
    assert greeting_path(silent) is None and greeting_latency_s(silent) is None


def test_malformed_messages_are_counted_by_side_not_as_call_events() -> None:
    from datetime import UTC, datetime

    from hotline.metrics import CallMetrics

    metrics = CallMetrics(lambda: 0)
    fresh = samples(metrics.render().decode())
    malformed = "hotline_ws_messages_malformed_total"
    assert fresh[(malformed, (("side", "twilio"),))] == 0  # shown before any call
    assert fresh[(malformed, (("side", "engine"),))] == 0
    for twilio, engine in [(3, 0), (4, 2)]:
        metrics.call_ended(CallRecord(
            "CA1", "acme", "inbound", "+1", "+2", "completed", Outcome.COMPLETED,
            datetime.now(UTC), None,
            stats={"media_in": 5, "malformed_twilio": twilio, "malformed_engine": engine}))
    scraped = samples(metrics.render().decode())
    assert scraped[(malformed, (("side", "twilio"),))] == 7
    assert scraped[(malformed, (("side", "engine"),))] == 2
    assert scraped[("hotline_call_events_total", (("event", "media_in"),))] == 10
    assert not [key for key in scraped if "malformed" in str(key[1])
                and key[0] == "hotline_call_events_total"]
