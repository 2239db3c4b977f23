"""The store commands, driven through Typer's CliRunner against the test database."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis
from rich.console import Console
from typer.testing import CliRunner, Result

import hotline.cli.business
import hotline.cli.calls
import hotline.cli.db
import hotline.cli.messages
import hotline.cli.template  # noqa: F401  (each registers its commands on the app)
from hotline.business_yaml import load_businesses_yaml
from hotline.cli import app
from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord, LeadMessage, TimelineStage, TranscriptTurn
from hotline.errors import InvalidBusiness
from hotline.store import Store
from hotline.store.migrate import head_revision
from hotline.waterfall import render_transcript, render_waterfall
from tests.services import redis_url, unavailable

EXAMPLES = Path(__file__).parents[1] / "examples" / "businesses.yaml"
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)

Cli = Callable[..., Result]


@pytest.fixture
def cli(database_url: str) -> Cli:
    def invoke(*args: str, url: str = database_url) -> Result:
        env = {"HOTLINE_DATABASE_URL": url, "COLUMNS": "200"}
        return CliRunner().invoke(app, list(args), env=env)

    return invoke


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def failed(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return result.output


def save_call(database_url: str, record: CallRecord, final_status: str = "completed") -> None:
    async def save() -> None:
        store = Store(database_url)
        try:
            await store.upgrade()
            await store.save_call(record)
            await store.record_call_status(record.call_sid, final_status, at=T0, sequence=5)
        finally:
            await store.close()

    asyncio.run(save())


# -- db -----------------------------------------------------------------------------------
def test_db_upgrade_migrates_once_and_names_the_revision(cli: Cli) -> None:
    first = ok(cli("db", "upgrade"))
    assert f"upgraded from an empty database to revision {head_revision()}" in first
    again = ok(cli("db", "upgrade"))
    assert f"already at the newest revision, {head_revision()}" in again


@pytest.mark.sockets
def test_db_upgrade_on_a_dead_database_masks_the_password(cli: Cli) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    output = failed(cli("db", "upgrade", url=f"postgresql://ops:pa55word@127.0.0.1:{port}/x"))
    assert "postgresql+asyncpg://ops:***@127.0.0.1" in output
    assert "unavailable" in output and "pa55word" not in output


# -- business -----------------------------------------------------------------------------
def test_import_demo_businesses_then_list_and_show(cli: Cli) -> None:
    output = ok(cli("business", "import", str(EXAMPLES)))
    assert output.count("added") == 2
    again = ok(cli("business", "import", str(EXAMPLES)))
    assert again.count("unchanged") == 2 and "added" not in again

    listed = ok(cli("business", "list"))
    for slug, number in (
        ("smile-dental-tlv", "+97235550100"),
        ("bay-plumbing", "+14155550100"),
    ):
        assert slug in listed and number in listed
    assert "quote-follow-up" in listed and "checkup-reminder" in listed

    shown = ok(cli("business", "show", "smile-dental-tlv"))
    for text in (
        "מרפאת השיניים סמייל דנט",
        "he (Hebrew)",
        "marin",
        "Asia/Jerusalem",
        "compact 832 chars",
        "checkup-reminder",
        "{name}",
    ):
        assert text in shown


def test_business_show_gives_the_greeting_timing_and_a_templates_override(
    cli: Cli, tmp_path: Path
) -> None:
    timed = tmp_path / "timed.yaml"
    text = EXAMPLES.read_text(encoding="utf-8")
    # bay-plumbing waits for the AMD verdict; its quote-follow-up template greets at once.
    text = text.replace("    timezone: America/Los_Angeles\n",
                        "    timezone: America/Los_Angeles\n    greeting_timing: after_amd\n")
    text = text.replace("      - name: quote-follow-up\n",
                        "      - name: quote-follow-up\n        greeting_timing: immediate\n")
    timed.write_text(text, encoding="utf-8")
    ok(cli("business", "import", str(EXAMPLES)))
    # Only the timings differ: one business updated; imported again, nothing changes.
    updated = ok(cli("business", "import", str(timed)))
    assert updated.count("updated") == 1 and updated.count("unchanged") == 1
    assert ok(cli("business", "import", str(timed))).count("unchanged") == 2

    shown = ok(cli("business", "show", "bay-plumbing"))
    (line,) = [line for line in shown.splitlines() if line.startswith("greeting timing")]
    assert "after_amd (outbound: silent until the AMD verdict" in line
    (row,) = [line for line in shown.splitlines() if "quote-follow-up" in line]
    assert row.rstrip().rstrip("│").rstrip().endswith("immediate")

    # The defaults: immediate, and the template follows its business.
    shown = ok(cli("business", "show", "smile-dental-tlv"))
    (line,) = [line for line in shown.splitlines() if line.startswith("greeting timing")]
    assert "immediate (outbound: greets at pickup" in line
    (row,) = [line for line in shown.splitlines() if "checkup-reminder" in line]
    assert "immediate" in row and "(business's)" in shown
    assert "(business's)" in ok(cli("template", "list", "--business", "smile-dental-tlv"))


def test_import_updates_a_changed_business(cli: Cli, tmp_path: Path) -> None:
    ok(cli("business", "import", str(EXAMPLES)))
    changed = tmp_path / "changed.yaml"
    changed.write_text(
        EXAMPLES.read_text(encoding="utf-8").replace("voice: cedar", "voice: ash"),
        encoding="utf-8",
    )
    output = ok(cli("business", "import", str(changed)))
    assert output.count("updated") == 1 and output.count("unchanged") == 1
    assert "ash" in ok(cli("business", "show", "bay-plumbing"))


def test_business_add_then_show(cli: Cli) -> None:
    output = ok(
        cli(
            "business",
            "add",
            "--slug",
            "pizza",
            "--name",
            "Pizza Roma",
            "--language",
            "en",
            "--voice",
            "cedar",
            "--greeting",
            "Pizza Roma, what can I get you?",
            "--number",
            "+1 415 555 0177",
            "--number",
            "+14155550178",
            "--caller-speaks-first",
            "--timezone",
            "America/New_York",
        )
    )
    assert "added business pizza" in output
    shown = ok(cli("business", "show", "pizza"))
    for text in (
        "+14155550177, +14155550178",
        "the caller",
        "America/New_York",
        "You are the friendly phone assistant of Pizza Roma.",
    ):
        assert text in shown
    again = failed(
        cli(
            "business",
            "add",
            "--slug",
            "pizza",
            "--name",
            "X",
            "--language",
            "en",
            "--voice",
            "cedar",
            "--greeting",
            "Hi",
            "--number",
            "+14155550179",
        )
    )
    assert "exists already" in again


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("555-0100", "is not an E.164 phone number"),
        ("+97235550100", "+97235550100 already belongs to business 'smile-dental-tlv'"),
    ],
)
def test_business_add_refuses_a_bad_or_taken_number(cli: Cli, number: str, message: str) -> None:
    ok(cli("business", "import", str(EXAMPLES)))
    output = failed(
        cli(
            "business",
            "add",
            "--slug",
            "new",
            "--name",
            "New",
            "--language",
            "he",
            "--voice",
            "marin",
            "--greeting",
            "שלום",
            "--number",
            number,
        )
    )
    assert message in output
    assert "new" not in ok(cli("business", "list")).split()


def test_export_prints_yaml_that_imports_back_unchanged(cli: Cli, tmp_path: Path) -> None:
    ok(cli("business", "import", str(EXAMPLES)))
    exported = tmp_path / "dental.yaml"
    exported.write_text(ok(cli("business", "export", "smile-dental-tlv")), encoding="utf-8")
    (loaded,) = load_businesses_yaml(exported)
    assert loaded == load_businesses_yaml(EXAMPLES)[0]
    assert "unchanged" in ok(cli("business", "import", str(exported)))


def test_show_and_export_of_an_unknown_business_fail(cli: Cli) -> None:
    assert "no business 'ghost'" in failed(cli("business", "show", "ghost"))
    assert "no business 'ghost'" in failed(cli("business", "export", "ghost"))


BAD_YAML = [
    ("businesses: [\n  - slug: x\n", "not valid YAML"),
    ("slug: x\n", "expected a top-level 'businesses:' list"),
    (
        "businesses:\n  - slug: acme\n    name: Acme\n    language: en\n    voice: marin\n"
        "    greeting: Hi\n    numbers: [+14155550100]\n    prompt: {role: You answer.}\n",
        "business #1 (acme): numbers[0]: put the number in quotes",
    ),
    (
        "businesses:\n  - slug: acme\n    name: Acme\n    language: english\n    voice: marin\n"
        "    greeting: Hi\n    numbers: ['+14155550100']\n    prompt: {role: You answer.}\n",
        "business #1 (acme): language: 'english' is not a language code",
    ),
    (
        "businesses:\n  - slug: acme\n    name: Acme\n    language: en\n    voice: marin\n"
        "    greeting: Hi\n    numbers: ['+14155550100']\n    prompt: {role: You answer.}\n"
        "    colour: blue\n",
        "business #1 (acme): colour: unknown field",
    ),
    (
        "businesses:\n  - slug: acme\n    name: Acme\n    language: en\n    voice: marin\n"
        "    numbers: ['+14155550100']\n    prompt: {role: You answer.}\n",
        "business #1 (acme): greeting: required field missing",
    ),
    (
        "businesses:\n  - slug: acme\n    name: Acme\n    language: en\n    voice: marin\n"
        "    greeting: Hi\n    numbers: ['+14155550100']\n    prompt: {role: You answer.}\n"
        "    templates: [{name: r, greeting: 'Hi {name'}]\n",
        "business #1 (acme): templates[r].greeting:",
    ),
    (
        "businesses:\n  - slug: acme\n    name: Acme\n    language: en\n    voice: marin\n"
        "    greeting: Hi\n    numbers: ['+14155550100']\n    prompt: {role: You answer.}\n"
        "    greeting_timing: after_greeting\n",
        "business #1 (acme): greeting_timing: 'after_greeting' is not a greeting timing "
        "(known: immediate, after_amd)",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_YAML)
def test_import_of_a_bad_file_fails_with_a_clear_message(
    cli: Cli, tmp_path: Path, text: str, message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, encoding="utf-8")
    output = failed(cli("business", "import", str(bad)))
    assert f"{bad}: " in output and message in output
    with pytest.raises(InvalidBusiness, match=re.escape(message)):
        load_businesses_yaml(bad)


def test_import_of_a_missing_file_fails(cli: Cli, tmp_path: Path) -> None:
    assert "cannot read" in failed(cli("business", "import", str(tmp_path / "none.yaml")))


# -- template -----------------------------------------------------------------------------
def test_template_add_and_list(cli: Cli) -> None:
    ok(cli("business", "import", str(EXAMPLES)))
    output = ok(
        cli(
            "template",
            "add",
            "--business",
            "bay-plumbing",
            "--name",
            "seasonal",
            "--greeting",
            "Hi {name}, time for your {season} tune-up.",
            "--instructions",
            "Offer two windows.",
        )
    )
    assert "saved template seasonal of bay-plumbing" in output
    assert "{name}, {season}" in output
    listed = ok(cli("template", "list", "--business", "bay-plumbing"))
    assert "seasonal" in listed and "quote-follow-up" in listed
    assert "checkup-reminder" not in listed
    everything = ok(cli("template", "list"))
    assert "3 outbound templates" in everything and "checkup-reminder" in everything


def test_template_add_with_a_greeting_timing(cli: Cli) -> None:
    ok(cli("business", "import", str(EXAMPLES)))
    add = ("template", "add", "--business", "bay-plumbing", "--name", "seasonal",
           "--greeting", "Hi {name}")
    ok(cli(*add, "--greeting-timing", "after_amd"))
    (row,) = [line for line in ok(cli("business", "show", "bay-plumbing")).splitlines()
              if "seasonal" in line]
    assert "after_amd" in row
    ok(cli(*add))  # replaced without one: the business's again
    (row,) = [line for line in ok(cli("business", "show", "bay-plumbing")).splitlines()
              if "seasonal" in line]
    assert "immediate" in row and "after_amd" not in row
    assert "'later' is not one of" in cli(*add, "--greeting-timing", "later").output


def test_template_add_to_an_unknown_business_or_with_a_bad_greeting_fails(cli: Cli) -> None:
    ok(cli("business", "import", str(EXAMPLES)))
    missing = cli("template", "add", "--business", "ghost", "--name", "x", "--greeting", "Hi")
    assert "no business 'ghost'" in failed(missing)
    bad = cli(
        "template", "add", "--business", "bay-plumbing", "--name", "x", "--greeting", "Hi {name"
    )
    assert "templates[x].greeting" in failed(bad)
    assert "no business 'ghost'" in failed(cli("template", "list", "--business", "ghost"))


# -- calls --------------------------------------------------------------------------------
def a_call(call_sid: str = "CA0123456789abcdef", **started: int) -> CallRecord:
    return CallRecord(
        call_sid=call_sid,
        business_slug="bay-plumbing",
        direction="inbound",
        from_number="+14155551234",
        to_number="+14155550100",
        status="completed",
        outcome=Outcome.TRANSFERRED,
        started_at=T0 + timedelta(minutes=started.get("minutes", 0)),
        ended_at=T0 + timedelta(minutes=started.get("minutes", 0), seconds=95),
        transcript=[
            TranscriptTurn("agent", "Thanks for calling Bayside.", 423, 3100),
            TranscriptTurn("caller", "My water heater is leaking.", 3400, 5200),
        ],
        timeline=[
            TimelineStage("webhook_received", 0.0),
            TimelineStage("stream_start", 380.0),
            TimelineStage("first_audio_to_caller", 383.5),
            TimelineStage("greeting_done", 3100.0),
        ],
    )


def test_calls_list_and_show_a_saved_call(cli: Cli, database_url: str) -> None:
    ok(cli("business", "import", str(EXAMPLES)))
    save_call(database_url, a_call())
    save_call(database_url, a_call("CAolder", minutes=-5))
    listed = ok(cli("calls", "list"))
    assert listed.index("CA0123456789abcdef") < listed.index("CAolder")  # newest first
    for text in (
        "2026-03-01 09:30:00",
        "bay-plumbing",
        "inbound",
        "+14155551234",
        "completed",
        "transferred",
        "1m35s",
    ):
        assert text in listed
    assert "CAolder" not in ok(cli("calls", "list", "--limit", "1"))
    assert "0 calls" in ok(cli("calls", "list", "--business", "smile-dental-tlv"))

    shown = ok(cli("calls", "show", "CA0123456789abcdef"))
    for text in (
        "+14155551234 → +14155550100",
        "My water heater is leaking.",
        "first_audio_to_caller",
        "383.5",
        "stream start → first audio to caller: 3.5 ms",
    ):
        assert text in shown
    assert shown.index("Thanks for calling Bayside.") < shown.index("My water heater")
    assert shown.index("webhook_received") < shown.index("greeting_done")


def test_calls_list_shows_and_filters_outcomes(cli: Cli, database_url: str) -> None:
    ok(cli("business", "import", str(EXAMPLES)))
    save_call(database_url, replace(a_call("CAvoicemail", minutes=1), direction="outbound",
                                    outcome=Outcome.VOICEMAIL))
    unanswered = replace(a_call("CAunanswered", minutes=2), direction="outbound",
                         status="queued", outcome=None, ended_at=None, transcript=[], timeline=[])
    save_call(database_url, unanswered, final_status="busy")
    save_call(database_url, replace(a_call("CAringing", minutes=3), outcome=None, ended_at=None),
              final_status="ringing")
    listed = ok(cli("calls", "list"))
    rows = {line.split("│")[2].strip(): line for line in listed.splitlines()
            if line.startswith("│")}
    assert Outcome.VOICEMAIL in rows["CAvoicemail"]
    assert Outcome.NO_ANSWER in rows["CAunanswered"] and "busy" in rows["CAunanswered"]
    assert rows["CAringing"].split("│")[8].strip() == "—"  # no outcome yet
    only = ok(cli("calls", "list", "--outcome", Outcome.NO_ANSWER))
    assert "1 calls" in only and "CAunanswered" in only and "CAvoicemail" not in only
    assert "0 calls" in ok(cli("calls", "list", "--outcome", Outcome.TRANSFERRED))
    assert Outcome.HUNG_UP_BY_AGENT in ok(cli("calls", "list", "--help"))


def test_calls_show_of_an_unknown_sid_fails(cli: Cli) -> None:
    assert "no call 'CAnothing'" in failed(cli("calls", "show", "CAnothing"))


# -- messages -----------------------------------------------------------------------------
def test_messages_list_newest_first_filtered_and_limited(cli: Cli, database_url: str) -> None:
    ok(cli("business", "import", str(EXAMPLES)))
    assert "0 messages" in ok(cli("messages", "list"))
    save_call(database_url, replace(a_call("CAplumbing"), messages=[
        LeadMessage("Dana Levi", "+14155551234", "Water heater leaking, call back today.", 5_000),
    ]))
    save_call(database_url, replace(
        a_call("CAdental", minutes=10), business_slug="smile-dental-tlv",
        to_number="+97235550100",
        messages=[LeadMessage("נועה כהן", "050-555-1234", "רוצה לקבוע ניקוי אבנית", 3_000)]))
    listed = ok(cli("messages", "list"))
    assert "2 messages" in listed
    # Taken 3 s and 5 s after the webhook; the record starts at the stream, 380 ms in.
    for text in ("2026-03-01 09:40:02", "smile-dental-tlv", "נועה כהן", "050-555-1234",
                 "2026-03-01 09:30:04", "Dana Levi", "Water heater leaking, call back today.",
                 "CAplumbing"):
        assert text in listed, text
    assert listed.index("CAdental") < listed.index("CAplumbing")  # newest first
    plumbing = ok(cli("messages", "list", "--business", "bay-plumbing"))
    assert "1 messages" in plumbing and "Dana Levi" in plumbing and "נועה" not in plumbing
    latest = ok(cli("messages", "list", "--limit", "1"))
    assert "CAdental" in latest and "CAplumbing" not in latest
    assert "0 messages" in ok(cli("messages", "list", "--business", "ghost"))


def test_messages_list_shows_a_voice_messages_audio(cli: Cli, database_url: str) -> None:
    ok(cli("business", "import", str(EXAMPLES)))
    save_call(database_url, replace(a_call("CAvoice"), messages=[
        LeadMessage("", "+14155551234", "Voice message (3.2 s): the agent was unavailable",
                    5_000, message_id="CAvoice-1", audio_file="messages/CAvoice-1.wav",
                    audio_ms=3_200)]))
    listed = ok(cli("messages", "list"))
    for text in ("messages/CAvoice-1.wav", "(3.2 s)", "+14155551234"):
        assert text in listed.replace("\n", ""), text


# -- waterfall ----------------------------------------------------------------------------
def rendered(table: object, width: int = 120) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(table)
    return console.export_text().splitlines()


def test_waterfall_bars_are_drawn_to_scale_in_time_order() -> None:
    timeline = [
        TimelineStage("webhook_received", 0.0),
        TimelineStage("greeting_done", 1000.0),
        TimelineStage("stream_start", 250.0),
        TimelineStage("first_audio_to_caller", 500.0),
    ]
    lines = rendered(render_waterfall(timeline, width=40))
    rows = {line.split()[1]: line for line in lines if line.startswith("│")}
    assert list(rows) == [
        "webhook_received",
        "stream_start",
        "first_audio_to_caller",
        "greeting_done",
    ]
    assert [rows[stage].count("█") for stage in rows] == [0, 10, 10, 20]
    assert rows["greeting_done"].index("█") > rows["first_audio_to_caller"].index("█")
    assert "+250.0" in rows["first_audio_to_caller"]
    assert any("stream start → first audio to caller: 250.0 ms" in line for line in lines)


def test_waterfall_highlights_first_audio_to_caller() -> None:
    table = render_waterfall(
        [TimelineStage("stream_start", 0.0), TimelineStage("first_audio_to_caller", 2.0)]
    )
    styles = [str(row.style) for row in table.rows]
    assert styles == ["None", "bold"]


def test_empty_timeline_and_transcript_say_so() -> None:
    assert any("no timeline recorded" in line for line in rendered(render_waterfall([])))
    assert any("no transcript recorded" in line for line in rendered(render_transcript([])))


def test_transcript_marks_interrupted_turns() -> None:
    lines = rendered(render_transcript([TranscriptTurn("agent", "Let me", 1500, 1900, True)]))
    assert any("1.5" in line and "Let me [interrupted]" in line for line in lines)


@pytest.mark.sockets
def config_announcements(database_url: str, *commands: list[str]) -> int:
    """Run these CLI commands with HOTLINE_REDIS_URL; how many config changes they
    announced on the signal channel the instances listen to."""
    url = redis_url()
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        unavailable("Redis", exc)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("hotline:signals")
    env = {"HOTLINE_DATABASE_URL": database_url, "HOTLINE_REDIS_URL": url, "COLUMNS": "200"}
    try:
        for command in commands:
            ok(CliRunner().invoke(app, command, env=env))
        ours: list[object] = []
        deadline = time.monotonic() + 5  # then 0.3 s more, for a second one that must not come
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message is not None and orjson.loads(message["data"])[1:] == ["config", "cli"]:
                ours.append(message)
                deadline = min(deadline, time.monotonic() + 0.3)
    finally:
        pubsub.close()
        client.close()
    return len(ours)


def test_business_import_tells_running_instances_through_redis(database_url: str) -> None:
    """With HOTLINE_REDIS_URL, a change made with the CLI is announced on the signal channel
    the instances listen to (they reload at once, not at their next poll); unchanged
    businesses announce nothing."""
    # The first import changed things, the second did not.
    assert config_announcements(database_url, ["business", "import", str(EXAMPLES)],
                                ["business", "import", str(EXAMPLES)]) == 1


def test_template_add_tells_running_instances_through_redis(cli: Cli,
                                                           database_url: str) -> None:
    """A template is its business's config: the instances must place the next outbound
    call with it, not wait for their poll."""
    ok(cli("business", "import", str(EXAMPLES)))  # (without Redis: told nobody)
    slug = "smile-dental-tlv"  # examples/businesses.yaml's first
    assert config_announcements(database_url, [
        "template", "add", "--business", slug, "--name", "fleet-reminder",
        "--greeting", "Hi {name}, a reminder from us."]) == 1
