"""The Store against a real database: SQLite by default, PostgreSQL under CI (conftest)."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import traceback
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, func, insert, inspect, select
from sqlalchemy.engine import Connection

from hotline.business import DEFAULT_TOOLS, BusinessConfig, GreetingTiming, HttpTool, TemplateConfig
from hotline.business_yaml import load_businesses_yaml
from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord, LeadMessage, TimelineStage, TranscriptTurn
from hotline.errors import BusinessNotFound, DuplicateNumber, InvalidBusiness, StoreUnavailable
from hotline.store import Store, StoredMessage, models, normalise_database_url
from hotline.store.migrate import alembic_config, compare_server_default, head_revision

DEMO_YAML = Path(__file__).parents[1] / "src" / "hotline" / "data" / "demo_businesses.yaml"
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def business(slug: str = "acme", *numbers: str, **changes: Any) -> BusinessConfig:
    base = BusinessConfig(
        slug=slug,
        name="Acme Plumbing",
        language="en",
        voice="marin",
        greeting="Acme Plumbing, how can I help?",
        role="You answer the phone for Acme Plumbing.",
        tone="Warm.",
        greeting_rules="Greet once.",
        knowledge="Open 8-5.",
        policies="No diagnoses.",
        faq="Q: Price? A: $89.",
        phone_numbers=numbers or ("+14155550111",),
        templates=(TemplateConfig("reminder", "Hi {name}, a reminder.", "Confirm."),),
    )
    return replace(base, **changes)


def without_ids(config: BusinessConfig) -> BusinessConfig:
    templates = tuple(replace(t, id=None) for t in config.templates)
    return replace(config, id=None, templates=templates)


def call(call_sid: str = "CA0001", **changes: Any) -> CallRecord:
    record = CallRecord(
        call_sid=call_sid,
        business_slug="acme",
        direction="inbound",
        from_number="+972501234567",
        to_number="+14155550111",
        status="completed",
        outcome=Outcome.COMPLETED,
        started_at=T0,
        ended_at=T0 + timedelta(seconds=42),
        transcript=[
            TranscriptTurn("agent", "Acme Plumbing, how can I help?", 420, 2900),
            TranscriptTurn("caller", "My sink is leaking", 3100, 4800),
            TranscriptTurn("agent", "I can send someone", 5000, 5600, interrupted=True),
        ],
        timeline=[
            TimelineStage("webhook_received", 0.0),
            TimelineStage("plan_ready", 1.25),
            TimelineStage("stream_start", 410.5, "ws"),
            TimelineStage("first_audio_to_caller", 420.75),
        ],
    )
    return replace(record, **changes)


BOOKING_TOOL = HttpTool(
    name="book_slot",
    description="Book a visit slot for the caller.",
    url="https://acme.example/hotline/book",
    parameters={
        "type": "object",
        "properties": {"date": {"type": "string"}, "window": {"enum": ["am", "pm"]}},
        "required": ["date"],
    },
    timeout_s=2.5,
)


def timed(slug: str = "acme", **changes: Any) -> BusinessConfig:
    """A business that holds its greeting for the AMD verdict; one template greets at once,
    the other follows the business."""
    values: dict[str, Any] = {
        "greeting_timing": GreetingTiming.AFTER_AMD,
        "templates": (
            TemplateConfig("follow-up", "Hi {name}", greeting_timing=GreetingTiming.IMMEDIATE),
            TemplateConfig("reminder", "Hi {name}, a reminder."),
        ),
    }
    values.update(changes)
    return business(slug, **values)


def controlled(slug: str = "acme", **changes: Any) -> BusinessConfig:
    """A business using every call control field."""
    values: dict[str, Any] = {
        "tools": ("end_call", "transfer_to_human", "check_hours"),
        "transfer_number": "+14155550199",
        "opening_hours": (("mon", "07:00-12:00, 13:00-18:00"), ("sat", "08:00-14:00"),
                          ("sun", "closed")),
        "dtmf_actions": (("0", "transfer_to_human"), ("#", "end_call")),
        "max_call_duration_s": 900,
        "http_tools": (BOOKING_TOOL,),
        "templates": (
            TemplateConfig("reminder", "Hi {name}, a reminder.", "Confirm.",
                           voicemail_template="Hi {name}, please call us back."),
        ),
    }
    values.update(changes)
    return business(slug, **values)


class StatementCounter:
    def __init__(self, store: Store) -> None:
        self.statements: list[str] = []
        event.listen(store.engine.sync_engine, "before_cursor_execute", self._count)
        self._engine = store.engine.sync_engine

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement)

    def stop(self) -> int:
        event.remove(self._engine, "before_cursor_execute", self._count)
        return len(self.statements)


# -- schema -------------------------------------------------------------------------------
async def test_migrations_create_exactly_the_models(store: Store) -> None:
    def differences(connection: Any) -> list[Any]:
        # As `alembic revision --autogenerate` compares (migrations/env.py).
        options = {"compare_type": True, "compare_server_default": compare_server_default}
        context = MigrationContext.configure(connection, opts=options)
        return list(compare_metadata(context, models.Base.metadata))

    async with store.engine.connect() as connection:
        assert await connection.run_sync(differences) == []
        tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert tables == set(models.Base.metadata.tables) | {"alembic_version"}


async def test_upgrade_migrates_an_empty_database_and_is_idempotent(database_url: str) -> None:
    store = Store(database_url)
    try:
        assert await store.revision() is None
        await store.upgrade()
        assert await store.revision() == head_revision()
        await store.save_business(business())
        counter = StatementCounter(store)
        await store.upgrade()  # again: nothing to do, nothing lost
        assert counter.stop() <= 6
        assert await store.revision() == head_revision()
        assert [b.slug for b in await store.list_businesses()] == ["acme"]
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("inspected", "rendered", "differs"),
    [
        ("'[]'::json", "[]", False),  # PostgreSQL
        ("'[]'", "[]", False),  # SQLite
        ("'[\"end_call\"]'::json", '["end_call", "check_hours"]', True),
        ("'[]'::json", None, True),
        (None, "[]", True),
    ],
)
def test_json_server_defaults_compare_as_text(
    inspected: str | None, rendered: str | None, differs: bool
) -> None:
    column = models.Business.__table__.c.tools
    assert compare_server_default(None, column, column, inspected, column.server_default,
                                  rendered) is differs


async def migrate(store: Store, revision: str, *, down: bool = False) -> None:
    def run(connection: Connection) -> None:
        step = command.downgrade if down else command.upgrade
        step(alembic_config(connection), revision)

    async with store.engine.connect() as connection, connection.begin():
        await connection.run_sync(run)


async def insert_rows(store: Store, table: Any, *rows: dict[str, Any]) -> None:
    """Rows through Core with only the columns given (so an older schema takes them)."""
    async with store.engine.connect() as connection, connection.begin():
        for row in rows:
            await connection.execute(insert(table).values(**row))


async def test_revision_0002_gives_existing_rows_the_defaults(database_url: str) -> None:
    store = Store(database_url)
    try:
        await migrate(store, "0001")
        await insert_rows(store, models.Business.__table__, {
            "id": 1, "slug": "old", "name": "Old Co", "language": "en", "voice": "marin",
            "greeting": "Hi", "role": "You answer.", "tone": "", "greeting_rules": "",
            "knowledge": "", "policies": "", "faq": "", "created_at": T0, "updated_at": T0,
        })
        await insert_rows(store, models.PhoneNumber.__table__,
                          {"number": "+14155550111", "business_id": 1})
        await insert_rows(store, models.OutboundTemplate.__table__, {
            "business_id": 1, "name": "reminder", "greeting_template": "Hi {name}",
            "instructions": "", "updated_at": T0,
        })
        await store.upgrade()
        assert await store.revision() == head_revision()
        old = await store.get_business("old")
        assert old is not None
        assert (old.tools, old.transfer_number, old.opening_hours, old.dtmf_actions) == (
            DEFAULT_TOOLS, None, (), ())
        assert (old.max_call_duration_s, old.http_tools) == (600, ())
        assert old.phone_numbers == ("+14155550111",)
        assert [(t.name, t.voicemail_template) for t in old.templates] == [("reminder", "")]
        assert await store.list_messages() == []
    finally:
        await store.close()


async def test_revision_0002_downgrades_without_losing_numbers_or_templates(
    database_url: str,
) -> None:
    store = Store(database_url)
    try:
        await store.upgrade()
        await store.save_business(controlled())
        await store.save_call(call(messages=[LeadMessage("Dana", "+15550001111", "Call me", 900)]))
        await migrate(store, "0001", down=True)
        assert await store.revision() == "0001"
        async with store.engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            columns = await connection.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("businesses")})
            numbers = await connection.scalar(select(func.count()).select_from(
                models.PhoneNumber.__table__))
            templates = await connection.scalar(select(func.count()).select_from(
                models.OutboundTemplate.__table__))
        assert "messages" not in tables and "tools" not in columns
        assert (numbers, templates) == (1, 1)  # no copy-and-move cascade on SQLite
        await store.upgrade()
        again = await store.get_business("acme")
        assert again is not None and again.phone_numbers == ("+14155550111",)
        assert again.tools == DEFAULT_TOOLS and again.transfer_number is None
    finally:
        await store.close()


async def test_revision_0003_gives_existing_rows_immediate_and_the_businesss_timing(
    database_url: str,
) -> None:
    store = Store(database_url)
    try:
        await migrate(store, "0002")
        await insert_rows(store, models.Business.__table__, {
            "id": 1, "slug": "old", "name": "Old Co", "language": "en", "voice": "marin",
            "greeting": "Hi", "role": "You answer.", "tone": "", "greeting_rules": "",
            "knowledge": "", "policies": "", "faq": "", "created_at": T0, "updated_at": T0,
            "max_call_duration_s": 900,
        })
        await insert_rows(store, models.PhoneNumber.__table__,
                          {"number": "+14155550111", "business_id": 1})
        await insert_rows(store, models.OutboundTemplate.__table__, {
            "business_id": 1, "name": "reminder", "greeting_template": "Hi {name}",
            "instructions": "", "voicemail_template": "Call us back.", "updated_at": T0,
        })
        await store.upgrade()
        assert await store.revision() == head_revision()
        old = await store.get_business("old")
        assert old is not None
        assert old.greeting_timing is GreetingTiming.IMMEDIATE
        assert old.max_call_duration_s == 900  # the 0002 columns untouched
        assert [(t.name, t.voicemail_template, t.greeting_timing) for t in old.templates] == [
            ("reminder", "Call us back.", None)]
    finally:
        await store.close()


async def test_revision_0003_downgrades_without_losing_numbers_or_templates(
    database_url: str,
) -> None:
    store = Store(database_url)
    try:
        await store.upgrade()
        await store.save_business(timed())
        await migrate(store, "0002", down=True)
        assert await store.revision() == "0002"
        async with store.engine.connect() as connection:
            columns = await connection.run_sync(lambda c: {
                table: {col["name"] for col in inspect(c).get_columns(table)}
                for table in ("businesses", "outbound_templates")})
            numbers = await connection.scalar(select(func.count()).select_from(
                models.PhoneNumber.__table__))
            templates = await connection.scalar(select(func.count()).select_from(
                models.OutboundTemplate.__table__))
        assert "greeting_timing" not in columns["businesses"] | columns["outbound_templates"]
        assert "tools" in columns["businesses"]  # 0002's columns stay
        assert (numbers, templates) == (1, 2)  # no copy-and-move cascade on SQLite
        await store.upgrade()
        again = await store.get_business("acme")
        assert again is not None and again.phone_numbers == ("+14155550111",)
        assert again.greeting_timing is GreetingTiming.IMMEDIATE
        assert [t.greeting_timing for t in again.templates] == [None, None]
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:pw@db:5432/hotline", "postgresql+asyncpg://u:***@db:5432/hotline"),
        ("postgres://u@db/hotline", "postgresql+asyncpg://u@db/hotline"),
        ("postgresql+asyncpg://u@db/hotline", "postgresql+asyncpg://u@db/hotline"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite+aiosqlite:///./hotline.db", "sqlite+aiosqlite:///./hotline.db"),
    ],
)
def test_database_urls_are_normalised_to_async_drivers(given: str, expected: str) -> None:
    assert normalise_database_url(given).render_as_string(hide_password=True) == expected
    assert Store(given).url == expected


def test_database_url_with_a_sync_driver_is_refused_without_its_password() -> None:
    with pytest.raises(StoreUnavailable, match="postgresql\\+asyncpg") as caught:
        Store("postgresql+psycopg2://u:hunter2@db/hotline")
    assert "hunter2" not in str(caught.value)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.sockets
async def test_unreachable_database_raises_store_unavailable_without_the_password() -> None:
    store = Store(f"postgresql://hotline:s3cret-pw@127.0.0.1:{_closed_port()}/hotline")
    assert "s3cret-pw" not in repr(store) and "s3cret-pw" not in store.url
    try:
        for operation in (store.check, store.upgrade, store.list_businesses, store.config_version):
            with pytest.raises(StoreUnavailable) as caught:
                await operation()
            message = str(caught.value)
            assert "postgresql+asyncpg://hotline:***@127.0.0.1" in message
            assert "s3cret-pw" not in "".join(traceback.format_exception(caught.value))
    finally:
        await store.close()


async def test_sqlite_file_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'missing' / 'hotline.db'}")
    try:
        with pytest.raises(StoreUnavailable, match="unable to open database file"):
            await store.check()
    finally:
        await store.close()


async def test_check_passes_on_a_live_database(store: Store) -> None:
    await store.check()


# -- businesses ---------------------------------------------------------------------------
async def test_demo_businesses_round_trip(store: Store) -> None:
    demo = load_businesses_yaml(DEMO_YAML)
    saved = [await store.save_business(b) for b in demo]
    assert [without_ids(b) for b in saved] == demo
    assert all(b.id is not None and all(t.id is not None for t in b.templates) for b in saved)
    listed = await store.list_businesses()
    assert [b.slug for b in listed] == sorted(b.slug for b in demo)
    assert {b.slug: b for b in listed} == {b.slug: b for b in saved}
    assert await store.get_business(demo[0].slug) == saved[0]
    assert await store.get_business("nobody") is None


async def test_save_business_upserts_by_slug(store: Store) -> None:
    first = await store.save_business(
        business(
            "acme",
            "+14155550111",
            "+14155550112",
            templates=(TemplateConfig("reminder", "Hi {name}"), TemplateConfig("survey", "Hey")),
        )
    )
    second = await store.save_business(
        business(
            "acme",
            "+14155550112",
            "+14155550113",  # one number kept, one dropped, one new
            name="Acme Plumbing & Heating",
            bot_speaks_first=False,
            timezone="America/Los_Angeles",
            templates=(TemplateConfig("reminder", "Hello {name}!", "Be brief."),),
        )
    )
    assert second.id == first.id
    assert second.name == "Acme Plumbing & Heating"
    assert second.phone_numbers == ("+14155550112", "+14155550113")
    assert not second.bot_speaks_first and second.timezone == "America/Los_Angeles"
    # The template given is updated in place; the one not given is kept.
    assert [(t.name, t.greeting_template, t.instructions) for t in second.templates] == [
        ("reminder", "Hello {name}!", "Be brief."),
        ("survey", "Hey", ""),
    ]
    assert second.templates[0].id == first.templates[0].id
    assert await store.get_business("acme") == second
    # The dropped number is free for another business.
    other = await store.save_business(business("other", "+14155550111", templates=()))
    assert other.phone_numbers == ("+14155550111",)


async def test_number_of_another_business_is_refused(store: Store) -> None:
    await store.save_business(business("acme", "+14155550111"))
    with pytest.raises(DuplicateNumber, match=r"\+14155550111 already belongs to business 'acme'"):
        await store.save_business(business("rival", "+14155550199", "+14155550111"))
    assert await store.get_business("rival") is None
    assert [b.slug for b in await store.list_businesses()] == ["acme"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"phone_numbers": ("4155550111",)}, "numbers[0]"),
        ({"phone_numbers": ("+1415",)}, "numbers[0]"),
        ({"phone_numbers": ("+1415555011100000",)}, "numbers[0]"),
        ({"phone_numbers": ()}, "numbers"),
        ({"phone_numbers": ("+14155550111", "+1 415 555 0111")}, "numbers"),
        ({"language": "Hebrew"}, "language"),
        ({"language": ""}, "language"),
        ({"slug": "Acme Inc"}, "slug"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"role": "  "}, "prompt.role"),
        ({"templates": (TemplateConfig("r", "Hi {name"),)}, "templates[r].greeting"),
        ({"templates": (TemplateConfig("r", "Hi {0}"),)}, "templates[r].greeting"),
    ],
)
async def test_invalid_business_is_refused_naming_the_field(
    store: Store, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidBusiness, match=f"^{re.escape(field)}:"):
        await store.save_business(business(**changes))
    assert await store.list_businesses() == []


async def test_call_control_round_trips(store: Store) -> None:
    wanted = controlled()
    saved = await store.save_business(wanted)
    assert without_ids(saved) == wanted
    assert await store.get_business("acme") == saved
    assert await store.list_businesses() == [saved]
    # Saved again with other values: every field follows, none is merged.
    changed = controlled(
        tools=(), transfer_number=None, opening_hours=(), dtmf_actions=(),
        max_call_duration_s=30, http_tools=(), templates=(TemplateConfig("reminder", "Hi"),),
    )
    resaved = await store.save_business(changed)
    assert without_ids(resaved) == changed
    assert await store.get_business("acme") == resaved


async def test_call_control_is_normalised(store: Store) -> None:
    saved = await store.save_business(
        controlled(
            transfer_number="+1 (415) 555-0199",
            opening_hours=(("Sunday", " closed "), ("Saturday", "08:00-14:00"),
                           ("monday", "07:00-18:00")),
            http_tools=(replace(BOOKING_TOOL, description="  Book.  ", timeout_s=3),),
        )
    )
    assert saved.transfer_number == "+14155550199"
    assert saved.opening_hours == (("mon", "07:00-18:00"), ("sat", "08:00-14:00"),
                                   ("sun", "closed"))
    (tool,) = saved.http_tools
    assert (tool.description, tool.timeout_s) == ("Book.", 3.0)
    assert isinstance(tool.timeout_s, float)
    blank = await store.save_business(business(transfer_number="  "))
    assert blank.transfer_number is None


@pytest.mark.parametrize("seconds", [30, 600, 14_400])
async def test_call_length_limits_at_the_bounds_are_accepted(store: Store, seconds: int) -> None:
    saved = await store.save_business(business(max_call_duration_s=seconds))
    assert saved.max_call_duration_s == seconds


async def test_save_template_keeps_its_voicemail(store: Store) -> None:
    await store.save_business(business(templates=()))
    saved = await store.save_template(
        "acme", TemplateConfig("follow-up", "Hi {name}", voicemail_template=" Hi {name}, bye. ")
    )
    assert saved.voicemail_template == "Hi {name}, bye."
    stored = await store.get_business("acme")
    assert stored is not None and stored.templates == (saved,)
    with pytest.raises(InvalidBusiness, match=r"^templates\[x\]\.voicemail:"):
        await store.save_template("acme", TemplateConfig("x", "Hi", voicemail_template="{0}"))


async def test_greeting_timing_round_trips(store: Store) -> None:
    wanted = timed()
    saved = await store.save_business(wanted)
    assert without_ids(saved) == wanted
    assert saved.greeting_timing is GreetingTiming.AFTER_AMD
    assert [t.greeting_timing for t in saved.templates] == [GreetingTiming.IMMEDIATE, None]
    assert await store.get_business("acme") == saved
    assert await store.list_businesses() == [saved]
    # Back to the defaults: the business greets at once, no template overrides it.
    defaults = business(templates=tuple(replace(t, greeting_timing=None) for t in wanted.templates))
    resaved = await store.save_business(defaults)
    assert without_ids(resaved) == defaults
    assert await store.get_business("acme") == resaved


async def test_greeting_timing_given_as_text_is_stored_as_the_value(store: Store) -> None:
    # What a caller outside the YAML path (or an old pickle) may pass: the enum's text.
    saved = await store.save_business(business(
        greeting_timing="after_amd",
        templates=(TemplateConfig("r", "Hi", greeting_timing="immediate"),),  # type: ignore[arg-type]
    ))
    assert saved.greeting_timing is GreetingTiming.AFTER_AMD
    assert saved.templates[0].greeting_timing is GreetingTiming.IMMEDIATE


async def test_save_template_keeps_its_greeting_timing(store: Store) -> None:
    await store.save_business(business(templates=(), greeting_timing=GreetingTiming.AFTER_AMD))
    saved = await store.save_template(
        "acme", TemplateConfig("follow-up", "Hi {name}", greeting_timing=GreetingTiming.IMMEDIATE)
    )
    assert saved.greeting_timing is GreetingTiming.IMMEDIATE
    stored = await store.get_business("acme")
    assert stored is not None and stored.templates == (saved,)
    assert stored.greeting_timing is GreetingTiming.AFTER_AMD  # the business's is untouched
    # Replaced without one: the template follows the business again.
    cleared = await store.save_template("acme", TemplateConfig("follow-up", "Hi {name}"))
    assert cleared.greeting_timing is None


def _tool(**changes: Any) -> tuple[HttpTool, ...]:
    return (replace(BOOKING_TOOL, **changes),)


CALL_CONTROL_ERRORS: dict[str, tuple[dict[str, Any], str, str]] = {
    "unknown tool": ({"tools": ("end_call", "fly")}, "tools[1]", "not a built-in tool"),
    "tool twice": ({"tools": ("end_call", "end_call")}, "tools", "twice"),
    "transfer tool, no number": (
        {"tools": ("transfer_to_human",)}, "transfer_number", "required"),
    "transfer key, no number": (
        {"dtmf_actions": (("0", "transfer_to_human"),)}, "transfer_number", "required"),
    "bad transfer number": (
        {"tools": ("transfer_to_human",), "transfer_number": "555-0199"}, "transfer_number",
        "E.164"),
    "letter key": ({"dtmf_actions": (("A", "end_call"),)}, "dtmf", "not a phone key"),
    "two-digit key": ({"dtmf_actions": (("10", "end_call"),)}, "dtmf", "not a phone key"),
    "unknown action": ({"dtmf_actions": (("1", "dance"),)}, "dtmf[1]", "not an action"),
    "key twice": (
        {"dtmf_actions": (("1", "end_call"), ("1", "end_call"))}, "dtmf", "twice"),
    "not a range": ({"opening_hours": (("mon", "9-5"),)}, "hours", "mon: '9-5'"),
    "not a weekday": ({"opening_hours": (("funday", "09:00-17:00"),)}, "hours", "weekday"),
    "crossing midnight": ({"opening_hours": (("fri", "22:00-02:00"),)}, "hours", "midnight"),
    "day twice": (
        {"opening_hours": (("mon", "09:00-12:00"), ("Monday", "13:00-17:00"))}, "hours",
        "mon listed twice"),
    "bad timezone": ({"timezone": "Mars/Olympus"}, "timezone", "IANA"),
    "call too short": ({"max_call_duration_s": 4}, "max_call_duration_s", "5 to 14400"),
    "call too long": ({"max_call_duration_s": 14_401}, "max_call_duration_s", "5 to 14400"),
    "call length not a number": (
        {"max_call_duration_s": "600"}, "max_call_duration_s", "whole number"),
    "tool name with a space": ({"http_tools": _tool(name="book slot")}, "http_tools.name", "1-64"),
    "tool name too long": ({"http_tools": _tool(name="x" * 65)}, "http_tools.name", "1-64"),
    "built-in name": (
        {"http_tools": _tool(name="end_call")}, "http_tools[end_call].name", "built-in"),
    "http tool twice": ({"http_tools": _tool() * 2}, "http_tools", "twice"),
    "ftp url": ({"http_tools": _tool(url="ftp://acme.example/x")}, "http_tools[book_slot].url",
                "http:// or https://"),
    "url without host": (
        {"http_tools": _tool(url="https://")}, "http_tools[book_slot].url", "http://"),
    "parameters not an object": (
        {"http_tools": _tool(parameters={"type": "string"})},
        "http_tools[book_slot].parameters", "JSON schema object"),
    "parameters with number keys": (
        {"http_tools": _tool(parameters={"type": "object", 1: {}})},
        "http_tools[book_slot].parameters", "plain JSON"),
    "properties not a mapping": (
        {"http_tools": _tool(parameters={"type": "object", "properties": ["date"]})},
        "http_tools[book_slot].parameters.properties", "mapping"),
    "no timeout": ({"http_tools": _tool(timeout_s=0)}, "http_tools[book_slot].timeout_s", "30"),
    "long timeout": (
        {"http_tools": _tool(timeout_s=30.5)}, "http_tools[book_slot].timeout_s", "at most 30"),
    "empty description": (
        {"http_tools": _tool(description=" ")}, "http_tools[book_slot].description", "empty"),
    "unknown greeting timing": (
        {"greeting_timing": "later"}, "greeting_timing", "'later' is not a greeting timing"),
    "unknown template greeting timing": (
        {"templates": (TemplateConfig("r", "Hi", greeting_timing="soon"),)},  # type: ignore[arg-type]
        "templates[r].greeting_timing", "'soon' is not a greeting timing"),
    "bad voicemail": (
        {"templates": (TemplateConfig("r", "Hi", voicemail_template="Hi {name"),)},
        "templates[r].voicemail", "Hi {name"),
}


@pytest.mark.parametrize(
    ("changes", "field", "says"), CALL_CONTROL_ERRORS.values(), ids=CALL_CONTROL_ERRORS.keys()
)
async def test_invalid_call_control_is_refused_naming_the_field(
    store: Store, changes: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(InvalidBusiness, match=f"^{re.escape(field)}: ") as caught:
        await store.save_business(business(**changes))
    assert says in str(caught.value)
    assert await store.list_businesses() == []


async def test_numbers_are_stored_in_e164(store: Store) -> None:
    saved = await store.save_business(business(phone_numbers=("+1 (415) 555-0111",)))
    assert saved.phone_numbers == ("+14155550111",)


async def test_save_template_inserts_and_updates_by_name(store: Store) -> None:
    await store.save_business(business(templates=()))
    added = await store.save_template("acme", TemplateConfig("follow-up", "Hi {name}", "Ask."))
    assert added.id is not None
    updated = await store.save_template("acme", TemplateConfig("follow-up", "Hey {name}"))
    assert (updated.id, updated.greeting_template, updated.instructions) == (
        added.id,
        "Hey {name}",
        "",
    )
    stored = await store.get_business("acme")
    assert stored is not None and stored.templates == (updated,)
    with pytest.raises(BusinessNotFound, match="nobody"):
        await store.save_template("nobody", TemplateConfig("x", "Hi"))
    with pytest.raises(InvalidBusiness, match="placeholder"):
        await store.save_template("acme", TemplateConfig("x", "Hi {first name}"))


async def test_config_version_changes_with_every_edit(store: Store) -> None:
    versions = [await store.config_version()]
    assert await store.config_version() == versions[-1]  # reading changes nothing

    async def changed() -> None:
        version = await store.config_version()
        assert version not in versions
        versions.append(version)

    await store.save_business(business("acme", "+14155550111"))
    await changed()
    await store.save_business(business("acme", "+14155550112"))  # a number
    await changed()
    await store.save_template("acme", TemplateConfig("reminder", "Hello {name}"))  # a template
    await changed()
    await store.save_business(business("other", "+14155550113"))  # a new business
    await changed()
    await store.save_business(business("acme", "+14155550112", greeting="Hi!"))
    await changed()
    await store.call_statuses("CA1")
    await store.list_businesses()
    assert await store.config_version() == versions[-1]


async def test_config_version_is_one_query(store: Store) -> None:
    await store.save_business(business())
    counter = StatementCounter(store)
    await store.config_version()
    assert counter.stop() == 1


# -- calls --------------------------------------------------------------------------------
async def test_call_round_trip_keeps_transcript_and_timeline_order(store: Store) -> None:
    await store.save_business(business())
    jerusalem = timezone(timedelta(hours=2))
    record = call(
        started_at=datetime(2026, 3, 1, 11, 30, tzinfo=jerusalem),
        ended_at=datetime(2026, 3, 1, 11, 30, 42, tzinfo=jerusalem),
        template_name="reminder",
        variables={"name": "Dana", "day": "Sunday"},
        direction="outbound",
    )
    # Recorded order is kept even where the times disagree with it.
    record.timeline.append(TimelineStage("engine_connected", 180.0, "late entry"))
    await store.save_call(record)
    loaded = await store.get_call("CA0001")
    assert loaded == record
    assert loaded is not None and loaded.started_at.tzinfo == UTC
    assert loaded.started_at == T0
    assert [s.stage for s in loaded.timeline][-1] == "engine_connected"
    assert await store.get_call("CA-unknown") is None


async def test_save_call_replaces_transcript_and_timeline(store: Store) -> None:
    await store.save_business(business())
    await store.save_call(call(status="in-progress", outcome=None, ended_at=None))
    final = call(
        transcript=[TranscriptTurn("agent", "Bye", 9000, 9500)],
        timeline=[TimelineStage("webhook_received", 0.0)],
    )
    await store.save_call(final)
    assert await store.get_call("CA0001") == final
    assert len(await store.list_calls()) == 1


async def test_save_call_statement_count_does_not_grow_with_the_transcript(store: Store) -> None:
    await store.save_business(business())

    async def statements(record: CallRecord) -> int:
        counter = StatementCounter(store)
        await store.save_call(record)
        return counter.stop()

    turns = [TranscriptTurn("caller", f"turn {i}", i * 1000, i * 1000 + 900) for i in range(40)]
    short, long = call("CA1"), call("CA2", transcript=turns)
    inserted = [await statements(short), await statements(long)]
    updated = [await statements(short), await statements(long)]
    assert inserted[0] == inserted[1] <= 3
    assert updated[0] == updated[1] <= 7


async def test_list_calls_newest_first_filtered_and_without_details(store: Store) -> None:
    await store.save_business(business("acme", "+14155550111"))
    await store.save_business(business("other", "+14155550112"))
    for i in range(5):
        await store.save_call(
            call(
                f"CA{i}",
                business_slug="acme" if i % 2 else "other",
                started_at=T0 + timedelta(minutes=i),
            )
        )
    calls = await store.list_calls()
    assert [c.call_sid for c in calls] == ["CA4", "CA3", "CA2", "CA1", "CA0"]
    assert all(c.transcript == [] and c.timeline == [] for c in calls)
    assert [c.call_sid for c in await store.list_calls(limit=2)] == ["CA4", "CA3"]
    acme = await store.list_calls(business_slug="acme")
    assert [(c.call_sid, c.business_slug) for c in acme] == [("CA3", "acme"), ("CA1", "acme")]
    assert await store.list_calls(business_slug="nobody") == []


async def test_call_of_an_unknown_business_is_kept_without_one(store: Store) -> None:
    await store.save_call(call(business_slug="gone"))
    loaded = await store.get_call("CA0001")
    assert loaded is not None and loaded.business_slug == ""
    assert len(loaded.transcript) == 3


async def test_status_callback_before_the_call_is_saved_creates_a_stub(store: Store) -> None:
    await store.save_business(business())
    await store.record_call_status("CA0001", "ringing", at=T0, sequence=0)
    await store.record_call_status(
        "CA0001", "in-progress", at=T0 + timedelta(seconds=2), sequence=1
    )
    (stub,) = await store.list_calls()
    assert (stub.call_sid, stub.business_slug, stub.status, stub.started_at) == (
        "CA0001",
        "",
        "in-progress",
        T0,
    )

    # The recorder completes the row; Twilio's status stands, its history is kept.
    await store.save_call(call(status="completed"))
    loaded = await store.get_call("CA0001")
    assert loaded is not None
    assert (loaded.business_slug, loaded.direction, loaded.status) == (
        "acme",
        "inbound",
        "in-progress",
    )
    assert len(loaded.transcript) == 3
    await store.record_call_status(
        "CA0001", "completed", at=T0 + timedelta(seconds=45), sequence=2, duration_s=43
    )
    loaded = await store.get_call("CA0001")
    assert loaded is not None and loaded.status == "completed"
    assert loaded.ended_at == T0 + timedelta(seconds=42)  # the recorder's, not overwritten
    assert [s for s, _ in await store.call_statuses("CA0001")] == [
        "ringing",
        "in-progress",
        "completed",
    ]


async def test_status_callbacks_after_the_call_is_saved(store: Store) -> None:
    await store.save_business(business())
    await store.save_call(call(status="in-progress", ended_at=None))
    at = T0 + timedelta(seconds=50)
    await store.record_call_status("CA0001", "completed", at=at, sequence=3, duration_s=50)
    loaded = await store.get_call("CA0001")
    assert loaded is not None
    assert (loaded.status, loaded.ended_at, loaded.business_slug) == ("completed", at, "acme")
    assert len(loaded.transcript) == 3
    async with store.engine.connect() as connection:
        duration = await connection.scalar(select(models.Call.duration_s))
    assert duration == 50


async def test_out_of_order_callbacks_leave_the_highest_sequence_status(store: Store) -> None:
    events = [("initiated", 0), ("ringing", 1), ("in-progress", 2), ("completed", 3)]
    for status, sequence in [events[3], events[1], events[0], events[2]]:
        await store.record_call_status(
            "CA9", status, at=T0 + timedelta(seconds=sequence), sequence=sequence
        )
    (stub,) = await store.list_calls()
    assert stub.status == "completed"
    assert stub.ended_at == T0 + timedelta(seconds=3)
    assert await store.call_statuses("CA9") == [
        (status, T0 + timedelta(seconds=sequence)) for status, sequence in events
    ]
    # A later save by the recorder does not overrule Twilio.
    await store.save_call(call("CA9", status="in-progress"))
    loaded = await store.get_call("CA9")
    assert loaded is not None and loaded.status == "completed"


async def test_concurrent_callbacks_still_end_on_the_highest_sequence(store: Store) -> None:
    statuses = ["queued", "initiated", "ringing", "in-progress", "completed"]
    order = list(enumerate(statuses))
    random.Random(7).shuffle(order)
    await asyncio.gather(
        *(
            store.record_call_status("CA7", status, at=T0 + timedelta(seconds=seq), sequence=seq)
            for seq, status in order
        )
    )
    loaded = await store.get_call("CA7")
    assert loaded is not None and loaded.status == "completed"
    assert [s for s, _ in await store.call_statuses("CA7")] == statuses


async def test_callbacks_without_a_sequence_rank_by_time(store: Store) -> None:
    await store.record_call_status("CA5", "in-progress", at=T0 + timedelta(seconds=5))
    await store.record_call_status("CA5", "ringing", at=T0)
    loaded = await store.get_call("CA5")
    assert loaded is not None and loaded.status == "in-progress"


async def test_save_call_without_callbacks_takes_the_record_status(store: Store) -> None:
    await store.save_business(business())
    await store.save_call(call(status="in-progress", ended_at=None))
    await store.save_call(call(status="completed"))
    loaded = await store.get_call("CA0001")
    assert loaded is not None and loaded.status == "completed"
    assert await store.call_statuses("CA0001") == []


async def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="naive"):
        await store.save_call(call(started_at=datetime(2026, 3, 1, 9, 30)))
    with pytest.raises(ValueError, match="naive"):
        await store.record_call_status("CA1", "ringing", at=datetime(2026, 3, 1, 9, 30))
    assert await store.list_calls() == []


# -- outcomes -----------------------------------------------------------------------------
@pytest.mark.parametrize("outcome", list(Outcome))
async def test_every_outcome_is_stored_and_filtered_on(store: Store, outcome: Outcome) -> None:
    await store.save_business(business())
    await store.save_call(call("CA1", outcome=outcome))
    await store.save_call(call("CA2", outcome=next(o for o in Outcome if o is not outcome)))
    loaded = await store.get_call("CA1")
    assert loaded is not None and loaded.outcome == outcome
    assert [c.call_sid for c in await store.list_calls(outcome=outcome)] == ["CA1"]


@pytest.mark.parametrize(
    ("final", "outcome"),
    [("no-answer", Outcome.NO_ANSWER), ("busy", Outcome.NO_ANSWER),
     ("canceled", Outcome.NO_ANSWER), ("failed", Outcome.FAILED)],
)
async def test_an_outbound_call_never_answered_gets_its_outcome_from_twilio(
    store: Store, final: str, outcome: str
) -> None:
    await store.save_business(business())
    placed = call("CA1", direction="outbound", status="queued", outcome=None, ended_at=None,
                  transcript=[], timeline=[])
    await store.save_call(placed)  # as the API records a call it placed
    await store.record_call_status("CA1", "initiated", at=T0, sequence=0)
    await store.record_call_status("CA1", "ringing", at=T0 + timedelta(seconds=1), sequence=1)
    loaded = await store.get_call("CA1")
    assert loaded is not None and loaded.outcome is None  # not known while it rings
    await store.record_call_status("CA1", final, at=T0 + timedelta(seconds=30), sequence=2)
    loaded = await store.get_call("CA1")
    assert loaded is not None
    assert (loaded.status, loaded.outcome) == (final, outcome)
    assert loaded.ended_at == T0 + timedelta(seconds=30)
    # The placing record saved again (a replayed journal, say) knows no outcome: it stays.
    await store.save_call(placed)
    loaded = await store.get_call("CA1")
    assert loaded is not None and loaded.outcome == outcome


async def test_status_callbacks_alone_give_a_stub_its_outcome(store: Store) -> None:
    await store.record_call_status("CA1", "no-answer", at=T0)
    await store.record_call_status("CA2", "completed", at=T0, duration_s=12)
    outcomes = {c.call_sid: c.outcome for c in await store.list_calls()}
    assert outcomes == {"CA1": Outcome.NO_ANSWER, "CA2": Outcome.COMPLETED}


@pytest.mark.parametrize("outcome", [Outcome.VOICEMAIL, Outcome.TRANSFERRED,
                                     Outcome.HUNG_UP_BY_AGENT, Outcome.FAILED])
async def test_a_later_completed_callback_keeps_the_records_outcome(
    store: Store, outcome: str
) -> None:
    await store.save_business(business())
    await store.save_call(call(outcome=outcome))
    await store.record_call_status("CA0001", "completed", at=T0 + timedelta(seconds=43))
    loaded = await store.get_call("CA0001")
    assert loaded is not None and (loaded.status, loaded.outcome) == ("completed", outcome)


async def test_the_records_outcome_replaces_one_a_callback_filled_in(store: Store) -> None:
    await store.save_business(business())
    await store.record_call_status("CA0001", "completed", at=T0 + timedelta(seconds=43))
    await store.save_call(call(outcome=Outcome.VOICEMAIL))  # the record knows better
    loaded = await store.get_call("CA0001")
    assert loaded is not None and loaded.outcome == Outcome.VOICEMAIL


# -- messages -----------------------------------------------------------------------------
def lead(name: str = "Dana Levi", taken_ms: int = 12_000, **changes: Any) -> LeadMessage:
    values: dict[str, Any] = {"name": name, "phone": "+972501234567",
                              "message": "Please call back about the estimate.",
                              "taken_ms": taken_ms}
    values.update(changes)
    return LeadMessage(**values)


async def test_messages_are_saved_with_their_call(store: Store) -> None:
    await store.save_business(business())
    record = call(messages=[lead("Dana", 9_000), lead("Avi", 20_500)])
    await store.save_call(record)
    # taken_ms counts from the webhook, started_at is the stream's start.
    stream_start = next(s.ms for s in record.timeline if s.stage == "stream_start")
    at = T0 - timedelta(milliseconds=stream_start)
    assert await store.list_messages() == [
        StoredMessage("acme", "CA0001", "Avi", "+972501234567",
                      "Please call back about the estimate.", at + timedelta(seconds=20.5),
                      "CA0001-2"),
        StoredMessage("acme", "CA0001", "Dana", "+972501234567",
                      "Please call back about the estimate.", at + timedelta(seconds=9),
                      "CA0001-1"),
    ]
    loaded = await store.get_call("CA0001")
    assert loaded is not None and loaded.messages == []  # a call reads back without them


async def test_saving_a_call_again_never_duplicates_its_messages(store: Store) -> None:
    await store.save_business(business())
    record = call(messages=[lead()])
    await store.save_call(record)
    await store.save_call(record)  # replayed from the journal
    await store.record_call_status("CA0001", "completed", at=T0, sequence=4)
    await store.save_call(record)
    assert [m.name for m in await store.list_messages()] == ["Dana Levi"]
    # A later record of the same call is the whole truth: its messages replace the old.
    await store.save_call(call(messages=[lead("Dana Levi"), lead("Avi", 30_000)]))
    assert [m.name for m in await store.list_messages()] == ["Avi", "Dana Levi"]
    # One without messages (a record saved before the message was taken) clears them too,
    # as it does the transcript: records of one call are saved in the order they were made.
    await store.save_call(call(messages=[]))
    assert await store.list_messages() == []


async def test_a_voice_message_is_saved_with_its_audio_and_a_stable_id(store: Store) -> None:
    await store.save_business(business())
    voice = lead("", 12_000, message_id="CA0001-2", audio_file="messages/CA0001-2.wav",
                 audio_ms=4_200)
    record = call(messages=[lead("Dana", 9_000), voice], outcome=Outcome.ENGINE_UNAVAILABLE)
    await store.save_call(record)
    await store.save_call(record)  # written again: the same ids, no duplicates
    newest, oldest = await store.list_messages()
    assert (newest.message_id, newest.audio_file, newest.audio_ms) == (
        "CA0001-2", "messages/CA0001-2.wav", 4_200)
    assert (oldest.message_id, oldest.audio_file, oldest.audio_ms) == ("CA0001-1", None, None)
    assert await store.get_message("CA0001-2") == newest
    assert await store.get_message("CA0001-9") is None


async def test_revision_0004_gives_existing_messages_ids_and_downgrades(
    database_url: str,
) -> None:
    store = Store(database_url)
    try:
        await migrate(store, "0003")
        for call_sid, name in (("CA1", "a"), ("CA2", "b"), ("CA1", "c")):
            await insert_rows(store, models.Message.__table__, {
                "call_sid": call_sid, "name": name, "phone": "+1", "message": "m",
                "created_at": T0})
        await store.upgrade()
        assert await store.revision() == head_revision()
        ids = {m.name: m.message_id for m in await store.list_messages()}
        assert ids == {"a": "CA1-1", "b": "CA2-1", "c": "CA1-2"}
        await migrate(store, "0003", down=True)
        async with store.engine.connect() as connection:
            columns = await connection.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("messages")})
        assert not columns & {"message_id", "audio_file", "audio_ms"}
        await store.upgrade()
        assert len(await store.list_messages()) == 3
    finally:
        await store.close()


async def test_list_messages_newest_first_filtered_and_limited(store: Store) -> None:
    await store.save_business(business("acme", "+14155550111"))
    await store.save_business(business("other", "+14155550112"))
    for i in range(5):
        await store.save_call(call(
            f"CA{i}", business_slug="acme" if i % 2 else "other",
            started_at=T0 + timedelta(minutes=i), messages=[lead(f"caller {i}")],
        ))
    assert [m.call_sid for m in await store.list_messages()] == ["CA4", "CA3", "CA2", "CA1",
                                                                  "CA0"]
    assert [m.call_sid for m in await store.list_messages(limit=2)] == ["CA4", "CA3"]
    acme = await store.list_messages("acme")
    assert [(m.call_sid, m.business_slug) for m in acme] == [("CA3", "acme"), ("CA1", "acme")]
    assert await store.list_messages(business_slug="nobody") == []


async def test_a_message_of_an_unknown_business_is_kept_without_one(store: Store) -> None:
    await store.save_call(call(business_slug="gone", messages=[lead()]))
    (message,) = await store.list_messages()
    assert message.business_slug == "" and message.name == "Dana Levi"
    assert message.created_at.tzinfo == UTC


async def test_messages_of_any_length_are_stored(store: Store) -> None:
    long = lead(name="N" * 500, phone="call my office, extension 4412, after 3 pm" * 5,
                message="M" * 5000)
    await store.save_business(business())
    await store.save_call(call(messages=[long]))
    (message,) = await store.list_messages()
    assert (message.name, message.phone, message.message) == (long.name, long.phone,
                                                              long.message)


async def test_messages_cost_one_statement_and_none_when_absent(store: Store) -> None:
    await store.save_business(business())

    async def statements(record: CallRecord) -> int:
        counter = StatementCounter(store)
        await store.save_call(record)
        return counter.stop()

    without, with_messages = call("CA1"), call("CA2", messages=[lead(), lead("Avi")])
    assert await statements(with_messages) == await statements(without) + 1
    # Saved again: the old messages are deleted and the new inserted, nothing more.
    assert await statements(with_messages) == await statements(without) + 2
