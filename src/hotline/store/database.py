"""`Store`: the one facade through which Hotline reads and writes its database.

It takes and returns plain values (`BusinessConfig`, `TemplateConfig`, `CallRecord`); rows
never leave this module. Every public method is one short transaction. A database that
cannot be reached raises `StoreUnavailable`, whose message names the URL with its password
masked.

Call status: Twilio's status callbacks are the authority. Each one is kept
(`CallStatusEvent`); the call's status is that of the callback with the highest
`SequenceNumber` (callbacks without one rank below numbered ones, then by time). A call
saved by the recorder takes the recorder's status only while no callback has been recorded.

Call outcome (`hotline.core.outcomes.Outcome`): the recorder's, whenever it has one (an
empty outcome, "not known yet", never replaces a known one). A final status callback fills
in an outcome still empty: `completed` -> completed, `no-answer`, `busy`, `canceled` ->
no_answer (never answered), `failed` -> failed; so a voicemail or transfer the call record
set first is kept.

Messages the agent took (`CallRecord.messages`) are saved with their call, in the same
transaction, and replaced with it: saving a record again never duplicates them. Each has a
stable id, f"{call_sid}-{n}" (n: its place in the call, from 1); a voice message recorded
when no engine could be had also names its WAV (relative to the data directory).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    ScalarSelect,
    Select,
    and_,
    case,
    delete,
    event,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import InstrumentedAttribute, selectinload
from sqlalchemy.pool import StaticPool

from hotline.business import BusinessConfig, GreetingTiming, HttpTool, TemplateConfig
from hotline.core.greeting_path import (
    GREETING_STAGES,
    timeline_greeting_ms,
    timeline_greeting_path,
)
from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord, LeadMessage, TimelineStage, TranscriptTurn
from hotline.errors import ApiKeyError, BusinessNotFound, DuplicateNumber, StoreUnavailable
from hotline.store import models
from hotline.store.call_views import (
    BusinessStats,
    CallPage,
    CallQuery,
    CallView,
    StatsRow,
    business_stats,
    check_stats_range,
    decode_cursor,
    duration_s,
    encode_cursor,
    page_size,
    recording_of,
    stages_by_call,
    tool_calls,
)
from hotline.store.migrate import current_revision, upgrade_to_head
from hotline.store.urls import mask_url, normalise_database_url
from hotline.store.validation import check_business, check_template

# How long to wait for PostgreSQL to accept a connection (asyncpg's default is 60 s).
CONNECT_TIMEOUT_S = 10.0
# SQLSTATE classes of a database that is away rather than refusing a statement.
OUTAGE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})
# Twilio's final call statuses: the call is over once one arrives.
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
# The outcome a final status gives a call whose outcome is still empty.
OUTCOME_OF_FINAL_STATUS = {
    "completed": Outcome.COMPLETED,
    "no-answer": Outcome.NO_ANSWER,
    "busy": Outcome.NO_ANSWER,
    "canceled": Outcome.NO_ANSWER,
    "failed": Outcome.FAILED,
}

# A column, or the ORM attribute mapped to one.
_Column = ColumnElement[Any] | InstrumentedAttribute[Any]
# A call known only from a status callback so far: save_call fills in the rest.
_STUB_CALL: dict[str, Any] = {
    "business_id": None, "direction": "", "from_number": "", "to_number": "",
    "template_name": None, "variables": {}, "outcome": "", "ended_at": None,
}  # fmt: skip
# Business fields copied one to one between `BusinessConfig` and `models.Business`.
_BUSINESS_FIELDS = (
    "name", "language", "voice", "greeting", "role", "tone", "greeting_rules",
    "knowledge", "policies", "faq", "bot_speaks_first", "timezone", "transfer_number",
    "max_call_duration_s", "recording", "recording_retention_days",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message the agent took, as `Store.list_messages` returns it."""

    business_slug: str  # "" when no business was matched to the call (or it was deleted)
    call_sid: str
    name: str
    phone: str
    message: str
    created_at: datetime  # when it was taken (UTC)
    message_id: str = ""  # f"{call_sid}-{n}"
    audio_file: str | None = None  # a recorded voice message's WAV, under the data directory
    audio_ms: int | None = None
    handled_at: datetime | None = None  # marked handled by the business; None: to do


@dataclass(frozen=True, slots=True)
class ExpiredRecording:
    """A call's recording past its business's retention, as the sweeper deletes it."""

    call_sid: str
    business_slug: str  # "" once the business was deleted
    recording_file: str  # relative to the data directory
    started_at: datetime


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A business's API key as stored: never the key itself, only its HMAC."""

    prefix: str
    business_slug: str
    name: str
    key_hash: str
    created_at: datetime
    revoked_at: datetime | None = None


class Store:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self._url = normalise_database_url(url)
        self.url = mask_url(self._url)
        self._postgres = self._url.get_backend_name() == "postgresql"
        options: dict[str, Any] = {}
        if self._postgres:
            options["pool_pre_ping"] = True
            options["connect_args"] = {"timeout": CONNECT_TIMEOUT_S}
        elif self._url.database in (None, "", ":memory:"):
            options["poolclass"] = StaticPool  # one connection, or each sees its own database
        self.engine: AsyncEngine = create_async_engine(self._url, echo=echo, **options)
        if not self._postgres:
            event.listen(self.engine.sync_engine, "connect", _enable_sqlite_foreign_keys)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- lifecycle ------------------------------------------------------------------------
    async def upgrade(self) -> None:
        """Apply the migrations up to head; a no-op (two cheap queries) when already there."""
        async with self._connection() as connection, connection.begin():
            await connection.run_sync(upgrade_to_head)

    async def revision(self) -> str | None:
        """The schema's current Alembic revision (None for an empty database)."""
        async with self._connection() as connection:
            return await connection.run_sync(current_revision)

    async def check(self) -> None:
        async with self._connection() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()

    # -- businesses -----------------------------------------------------------------------
    async def list_businesses(self) -> list[BusinessConfig]:
        async with self._session() as session:
            rows = await session.scalars(_business_query().order_by(models.Business.slug))
            return [_business_config(row) for row in rows]

    async def get_business(self, slug: str) -> BusinessConfig | None:
        async with self._session() as session:
            row = await session.scalar(_business_query().where(models.Business.slug == slug))
            return None if row is None else _business_config(row)

    async def save_business(self, business: BusinessConfig) -> BusinessConfig:
        """Insert or update by slug; numbers are replaced, the templates given are upserted
        by name (others kept). Returns the business as stored, all its templates included."""
        business = check_business(business)
        now = datetime.now(UTC)
        async with self._session() as session:
            await _refuse_taken_numbers(session, business)
            row = await _lock_business(session, business.slug)
            if row is None:
                row = models.Business(
                    slug=business.slug, created_at=now, revision=0, numbers=[], templates=[]
                )
                session.add(row)
            for name in _BUSINESS_FIELDS:
                setattr(row, name, getattr(business, name))
            _put_call_control(row, business)
            row.greeting_timing = business.greeting_timing.value
            row.updated_at = now
            row.revision += 1
            if [n.number for n in row.numbers] != list(business.phone_numbers):
                row.numbers.clear()
                await session.flush()  # the DELETEs first: a kept number is inserted again
                row.numbers.extend(models.PhoneNumber(number=n) for n in business.phone_numbers)
            for template in business.templates:
                _put_template(row, template, now)
            await session.flush()
            return _business_config(row)

    async def delete_business(self, slug: str) -> bool:
        """Remove the business, its numbers, templates and keys; its calls and messages are
        kept without a business. False if there was none."""
        async with self._session() as session:
            row = await _lock_business(session, slug)
            if row is None:
                return False
            await session.delete(row)
            await session.flush()
            return True

    async def save_template(self, business_slug: str, template: TemplateConfig) -> TemplateConfig:
        """Insert or update the business's template of this name."""
        template = check_template(template)
        now = datetime.now(UTC)
        async with self._session() as session:
            row = await _lock_business(session, business_slug)
            if row is None:
                raise BusinessNotFound(f"no business {business_slug!r}")
            row.updated_at = now
            row.revision += 1
            saved = _put_template(row, template, now)
            await session.flush()
            return _template_config(saved)

    async def delete_template(self, business_slug: str, name: str) -> bool:
        """Remove the business's template of this name; False if it had none."""
        async with self._session() as session:
            row = await _lock_business(session, business_slug)
            if row is None:
                return False
            for template in row.templates:
                if template.name == name:
                    row.templates.remove(template)  # delete-orphan
                    row.updated_at = datetime.now(UTC)
                    row.revision += 1
                    await session.flush()
                    return True
            return False

    async def config_version(self) -> str:
        """Changes whenever a business, one of its numbers or templates is saved or removed."""
        query = select(
            func.count(models.Business.id),
            func.coalesce(func.sum(models.Business.revision), 0),
            func.coalesce(func.max(models.Business.id), 0),
        )
        async with self._connection() as connection:
            count, revisions, last_id = (await connection.execute(query)).one()
        return f"{count}.{revisions}.{last_id}"

    # -- calls ----------------------------------------------------------------------------
    async def save_call(self, record: CallRecord) -> None:
        """Insert or update by call_sid, replacing its transcript, timeline and messages; a
        row a status callback created first is completed, its status history kept."""
        _require_aware(record.started_at, record.ended_at)
        values: dict[str, Any] = {
            "business_id": _business_id(record.business_slug),
            "direction": record.direction,
            "from_number": record.from_number,
            "to_number": record.to_number,
            "template_name": record.template_name,
            "variables": dict(record.variables),
            "outcome": record.outcome or "",
            "started_at": record.started_at,
            "ended_at": record.ended_at,
        }
        recording: dict[str, Any] = {}
        if record.recording_file is not None:
            # Only ever set by a record, cleared by the sweeper alone (with the file).
            recording = {"recording_file": record.recording_file,
                         "recording_ms": record.recording_ms}
        handled: dict[str | None, datetime | None] = {}
        async with self._session() as session:
            inserted = (
                await session.execute(
                    self._insert_new_call()
                    .values(call_sid=record.call_sid, status=record.status, **values,
                            **recording)
                    .returning(models.Call.id, models.Call.business_id)
                )
            ).first()
            if inserted is not None:
                call_id, business_id = inserted
            else:  # already there: lock it against a concurrent status callback
                call_id, has_history, has_messages = (
                    await session.execute(
                        _lock_call(record.call_sid, _has_status_history(), _has_messages())
                    )
                ).one()
                if not has_history:
                    values["status"] = record.status
                if record.ended_at is None:  # a final status callback may have set it
                    del values["ended_at"]
                if not record.outcome:  # not known yet: keep what a callback may have set
                    del values["outcome"]
                for column, value in recording.items():
                    # A record written again (the journal replayed) after the sweeper
                    # deleted its recording must not bring the path back.
                    values[column] = case(
                        (models.Call.recording_deleted_at.is_(None), value),
                        else_=getattr(models.Call, column))
                business_id = await session.scalar(
                    update(models.Call)
                    .where(models.Call.id == call_id)
                    .values(**values)
                    .returning(models.Call.business_id)
                )
                for table in (models.TranscriptTurn, models.TimelineEntry):
                    await session.execute(delete(table).where(table.call_id == call_id))
                if has_messages:
                    # A message the business marked handled stays handled when the record
                    # is written again (a journal replayed).
                    handled = dict((await session.execute(
                        delete(models.Message)
                        .where(models.Message.call_sid == record.call_sid)
                        .returning(models.Message.message_id, models.Message.handled_at)
                    )).all())
            if record.transcript:
                await session.execute(
                    insert(models.TranscriptTurn),
                    [_turn_row(call_id, i, turn) for i, turn in enumerate(record.transcript)],
                )
            if record.timeline:
                await session.execute(
                    insert(models.TimelineEntry),
                    [_stage_row(call_id, i, stage) for i, stage in enumerate(record.timeline)],
                )
            if record.messages:
                rows = [_message_row(business_id, record, n, message)
                        for n, message in enumerate(record.messages, start=1)]
                for row in rows:
                    row["handled_at"] = handled.get(row["message_id"])
                await session.execute(insert(models.Message), rows)

    async def record_call_status(
        self,
        call_sid: str,
        status: str,
        *,
        at: datetime,
        sequence: int | None = None,
        duration_s: int | None = None,
    ) -> None:
        """Keep one status callback and bring the call's status up to date (a stub row is
        created for a call not saved yet). Callbacks may arrive in any order. A final status
        fills in an outcome still empty (`OUTCOME_OF_FINAL_STATUS`). Idempotent: the same
        callback (CallSid, status, sequence and time) recorded again changes nothing."""
        _require_aware(at)
        async with self._session() as session:
            await session.execute(
                self._insert_new_call().values(
                    call_sid=call_sid, status=status, started_at=at, **_STUB_CALL
                )
            )
            # The lock orders concurrent callbacks: the second one sees the first's event.
            call_id, ended_at, outcome = (
                await session.execute(
                    _lock_call(call_sid, models.Call.ended_at, models.Call.outcome)
                )
            ).one()
            # The same callback again (a journal replayed, a write retried after its reply
            # was lost, Twilio retrying) is kept once.
            event_ = models.CallStatusEvent
            seen = await session.scalar(select(exists().where(
                event_.call_sid == call_sid, event_.status == status,
                event_.sequence.is_not_distinct_from(sequence), event_.at == at)))
            if not seen:
                await session.execute(insert(event_).values(
                    call_sid=call_sid, status=status, sequence=sequence, at=at))
            changes: dict[str, Any] = {"status": _latest_status(call_sid)}
            if duration_s is not None:
                changes["duration_s"] = duration_s
            if ended_at is None and status in FINAL_STATUSES:
                changes["ended_at"] = at
            if not outcome and status in OUTCOME_OF_FINAL_STATUS:
                changes["outcome"] = OUTCOME_OF_FINAL_STATUS[status]
            await session.execute(
                update(models.Call).where(models.Call.id == call_id).values(**changes)
            )

    async def list_calls(
        self, *, limit: int = 50, business_slug: str | None = None, outcome: str | None = None
    ) -> list[CallRecord]:
        """Newest first, without transcript, timeline or messages; `outcome` filters on it."""
        query = (
            select(models.Call, models.Business.slug)
            .outerjoin(models.Business, models.Call.business_id == models.Business.id)
            .order_by(models.Call.started_at.desc(), models.Call.id.desc())
            .limit(limit)
        )
        if business_slug is not None:
            query = query.where(models.Business.slug == business_slug)
        if outcome is not None:
            query = query.where(models.Call.outcome == outcome)
        async with self._session() as session:
            rows = (await session.execute(query)).all()
            return [_call_record(call, slug) for call, slug in rows]

    async def get_call(self, call_sid: str, *, business_slug: str | None = None
                       ) -> CallRecord | None:
        """The call with its transcript and timeline, each in the order recorded; None if
        there is none (of this business, when a slug is given)."""
        async with self._session() as session:
            found = await _load_call(session, call_sid, business_slug)
            return None if found is None else found[1]

    async def call_view(self, call_sid: str, *, business_slug: str | None = None
                        ) -> CallView | None:
        """The call with its transcript, timeline, tool calls, greeting and recording; None
        if there is none (of this business, when a slug is given)."""
        async with self._session() as session:
            found = await _load_call(session, call_sid, business_slug)
        if found is None:
            return None
        call, record = found
        return _call_view(call, record, record.timeline, with_tool_calls=True)

    async def search_calls(
        self, query: CallQuery | None = None, *, cursor: str | None = None,
        limit: int | None = None,
    ) -> CallPage:
        """Calls newest first (started_at, then id, descending), a page at a time: the
        `next_cursor` of a page gives the next one, stable under calls added meanwhile.
        Raises `InvalidCursor` for a cursor not from here, ValueError for a bad limit."""
        size = page_size(limit)
        statement = _call_search(query or CallQuery()).limit(size + 1)
        if cursor is not None:
            at, call_id = decode_cursor(cursor)
            statement = statement.where(or_(
                models.Call.started_at < at,
                and_(models.Call.started_at == at, models.Call.id < call_id)))
        async with self._session() as session:
            rows = (await session.execute(statement)).all()
            page = rows[:size]
            entry = models.TimelineEntry
            stages = stages_by_call((await session.execute(
                select(entry.call_id, entry.stage, entry.ms, entry.detail)
                .where(entry.call_id.in_([call.id for call, _ in page]),
                       entry.stage.in_(GREETING_STAGES))
                .order_by(entry.call_id, entry.position))).all())
        views = [_call_view(call, _call_record(call, slug), stages.get(call.id, []))
                 for call, slug in page]
        next_cursor = None
        if len(rows) > size:
            last = page[-1][0]
            next_cursor = encode_cursor(last.started_at, last.id)
        return CallPage(views, next_cursor)

    async def business_stats(self, slug: str, start: datetime, end: datetime) -> BusinessStats:
        """Stats of the business's calls that started in [start, end): calls per day (in its
        timezone), outcomes, greeting latency p50/p95 per path, average duration. Raises
        `BusinessNotFound`, or ValueError for a range that is empty, naive or too long."""
        check_stats_range(start, end)
        call, entry = models.Call, models.TimelineEntry
        async with self._session() as session:
            business = (await session.execute(
                select(models.Business.id, models.Business.timezone)
                .where(models.Business.slug == slug))).first()
            if business is None:
                raise BusinessNotFound(f"no business {slug!r}")
            business_id, timezone = business
            in_range = (call.business_id == business_id, call.started_at >= start,
                        call.started_at < end)
            calls = (await session.execute(
                select(call.id, call.started_at, call.ended_at, call.outcome, call.duration_s)
                .where(*in_range))).all()
            stages = stages_by_call((await session.execute(
                select(entry.call_id, entry.stage, entry.ms, entry.detail)
                .join(call, entry.call_id == call.id)
                .where(*in_range, entry.stage.in_(GREETING_STAGES))
                .order_by(entry.call_id, entry.position))).all())
        rows = []
        for call_id, started_at, ended_at, outcome, twilio_s in calls:
            timeline = stages.get(call_id, [])
            rows.append(StatsRow(started_at, outcome, duration_s(started_at, ended_at, twilio_s),
                                 timeline_greeting_path(timeline),
                                 timeline_greeting_ms(timeline)))
        return business_stats(slug, timezone, start, end, rows)

    # -- recordings -----------------------------------------------------------------------
    async def expired_recordings(self, now: datetime, *, orphan_retention_days: int,
                                 limit: int = 1000) -> list[ExpiredRecording]:
        """Recordings kept longer than their business's retention (a call whose business was
        deleted: `orphan_retention_days`), oldest first, at most `limit`."""
        call = models.Call
        async with self._session() as session:
            businesses = (await session.execute(select(
                models.Business.id, models.Business.slug,
                models.Business.recording_retention_days))).all()
            owners: list[tuple[int | None, str, int]] = [
                *businesses, (None, "", orphan_retention_days)]
            found: list[ExpiredRecording] = []
            for business_id, slug, days in owners:
                query = (
                    select(call.call_sid, call.recording_file, call.started_at)
                    .where(call.business_id.is_(None) if business_id is None
                           else call.business_id == business_id,
                           call.recording_file.is_not(None),
                           call.started_at < now - timedelta(days=days))
                    .order_by(call.started_at)
                    .limit(limit)
                )
                found.extend(ExpiredRecording(sid, slug, path or "", started_at)
                             for sid, path, started_at in (await session.execute(query)).all())
            found.sort(key=attrgetter("started_at"))
            return found[:limit]

    async def mark_recording_deleted(self, call_sid: str, at: datetime) -> bool:
        """The call's recording is gone: its path cleared, the time kept. False if it had
        none (already marked: idempotent)."""
        _require_aware(at)
        async with self._session() as session:
            marked = await session.scalar(
                update(models.Call)
                .where(models.Call.call_sid == call_sid,
                       models.Call.recording_file.is_not(None))
                .values(recording_file=None, recording_deleted_at=at)
                .returning(models.Call.id))
            return marked is not None

    async def list_messages(
        self, business_slug: str | None = None, limit: int = 50, *, handled: bool | None = None
    ) -> list[StoredMessage]:
        """Messages the agent took, newest first; only this business's when a slug is given,
        only the handled (True) or the unhandled (False) ones when `handled` is given."""
        message = models.Message
        query = (
            select(message, models.Business.slug)
            .outerjoin(models.Business, message.business_id == models.Business.id)
            .order_by(message.created_at.desc(), message.id.desc())
            .limit(limit)
        )
        if business_slug is not None:
            query = query.where(models.Business.slug == business_slug)
        if handled is not None:
            query = query.where(message.handled_at.is_not(None) if handled
                                else message.handled_at.is_(None))
        async with self._session() as session:
            rows = (await session.execute(query)).all()
            return [_stored_message(row, slug) for row, slug in rows]

    async def set_message_handled(
        self, message_id: str, handled: bool, *, business_slug: str | None = None
    ) -> StoredMessage | None:
        """Mark the message handled (dated now; marking it again keeps the first date) or
        to do again. None if there is no such message (of this business, when given)."""
        message = models.Message
        query = (
            select(message, models.Business.slug)
            .outerjoin(models.Business, message.business_id == models.Business.id)
            .where(message.message_id == message_id)
            .with_for_update(of=message)
        )
        if business_slug is not None:
            query = query.where(models.Business.slug == business_slug)
        async with self._session() as session:
            found = (await session.execute(query)).first()
            if found is None:
                return None
            row, slug = found
            if not handled:
                row.handled_at = None
            elif row.handled_at is None:
                row.handled_at = datetime.now(UTC)
            return _stored_message(row, slug)

    async def get_message(self, message_id: str) -> StoredMessage | None:
        message = models.Message
        query = (
            select(message, models.Business.slug)
            .outerjoin(models.Business, message.business_id == models.Business.id)
            .where(message.message_id == message_id)
        )
        async with self._session() as session:
            row = (await session.execute(query)).first()
            return None if row is None else _stored_message(row[0], row[1])

    # -- API keys -------------------------------------------------------------------------
    async def create_api_key(
        self, business_slug: str, name: str, prefix: str, key_hash: str
    ) -> StoredKey:
        """Keep a new key's prefix and HMAC (`hotline.keys.new_key`) for the business."""
        now = datetime.now(UTC)
        async with self._session() as session:
            business_id = await session.scalar(
                select(models.Business.id).where(models.Business.slug == business_slug))
            if business_id is None:
                raise BusinessNotFound(f"no business {business_slug!r}")
            session.add(models.ApiKey(business_id=business_id, prefix=prefix, name=name,
                                      key_hash=key_hash, created_at=now))
        return StoredKey(prefix, business_slug, name, key_hash, now)

    async def list_api_keys(self, business_slug: str | None = None) -> list[StoredKey]:
        """Keys, oldest first (revoked ones too); only this business's when a slug is given."""
        query = _key_query().order_by(models.ApiKey.created_at, models.ApiKey.id)
        if business_slug is not None:
            query = query.where(models.Business.slug == business_slug)
        async with self._session() as session:
            return [_stored_key(row, slug) for row, slug in (await session.execute(query)).all()]

    async def find_api_key(self, prefix: str) -> StoredKey | None:
        async with self._session() as session:
            found = (await session.execute(
                _key_query().where(models.ApiKey.prefix == prefix))).first()
            return None if found is None else _stored_key(found[0], found[1])

    async def revoke_api_key(self, prefix: str) -> StoredKey:
        """Revoke the key (kept, dated); revoking it again keeps the first date."""
        async with self._session() as session:
            found = (await session.execute(
                _key_query().where(models.ApiKey.prefix == prefix).with_for_update())).first()
            if found is None:
                raise ApiKeyError(f"no API key with prefix {prefix!r}")
            row, slug = found
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
            return _stored_key(row, slug)

    async def call_statuses(self, call_sid: str) -> list[tuple[str, datetime]]:
        """The call's status callbacks, oldest first (in the order that decides its status)."""
        event_ = models.CallStatusEvent
        query = (
            select(event_.status, event_.at)
            .where(event_.call_sid == call_sid)
            .order_by(*(column.asc() for column in _status_order()))
        )
        async with self._connection() as connection:
            return [(status, at) for status, at in await connection.execute(query)]

    def _insert_new_call(self) -> Insert:
        """INSERT INTO calls … ON CONFLICT (call_sid) DO NOTHING."""
        insert_ = postgresql.insert if self._postgres else sqlite.insert
        statement: Insert = insert_(models.Call).on_conflict_do_nothing(index_elements=["call_sid"])
        return statement

    # -- connections ----------------------------------------------------------------------
    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        try:
            connection = await self.engine.connect()
        except (DBAPIError, OSError) as exc:  # OSError: refused, unreachable, timed out
            raise self._unavailable(exc) from exc
        try:
            yield connection
        except (OperationalError, InterfaceError, OSError) as exc:
            raise self._unavailable(exc) from exc
        except DBAPIError as exc:
            if _is_outage(exc):
                raise self._unavailable(exc) from exc
            raise
        finally:
            await connection.close()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        """One transaction, committed when the block ends without an exception."""
        async with (
            self._connection() as connection,
            AsyncSession(bind=connection, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        cause = getattr(exc, "orig", None) or exc
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return StoreUnavailable(f"database {self.url} is unavailable: {reason}")


# -- businesses ---------------------------------------------------------------------------
def _business_query() -> Select[models.Business]:
    return select(models.Business).options(
        selectinload(models.Business.numbers), selectinload(models.Business.templates)
    )


async def _lock_business(session: AsyncSession, slug: str) -> models.Business | None:
    """The business row with numbers and templates, locked until commit (PostgreSQL)."""
    query = _business_query().where(models.Business.slug == slug)
    return await session.scalar(query.with_for_update(of=models.Business))


async def _refuse_taken_numbers(session: AsyncSession, business: BusinessConfig) -> None:
    taken = (
        await session.execute(
            select(models.PhoneNumber.number, models.Business.slug)
            .join(models.Business)
            .where(
                models.PhoneNumber.number.in_(business.phone_numbers),
                models.Business.slug != business.slug,
            )
            .order_by(models.PhoneNumber.number)
        )
    ).first()
    if taken is not None:
        number, owner = taken
        raise DuplicateNumber(
            f"{number} already belongs to business {owner!r}; "
            f"remove it there before giving it to {business.slug!r}",
            number=number,
        )


def _put_template(
    business: models.Business, template: TemplateConfig, now: datetime
) -> models.OutboundTemplate:
    for row in business.templates:
        if row.name == template.name:
            break
    else:
        row = models.OutboundTemplate(name=template.name)
        business.templates.append(row)
    row.greeting_template = template.greeting_template
    row.instructions = template.instructions
    row.voicemail_template = template.voicemail_template
    timing = template.greeting_timing
    row.greeting_timing = None if timing is None else timing.value  # NULL: the business's
    row.updated_at = now
    return row


def _template_config(row: models.OutboundTemplate) -> TemplateConfig:
    return TemplateConfig(
        name=row.name,
        greeting_template=row.greeting_template,
        instructions=row.instructions,
        voicemail_template=row.voicemail_template,
        greeting_timing=None if row.greeting_timing is None else GreetingTiming(
            row.greeting_timing),
        id=row.id,
    )


def _business_config(row: models.Business) -> BusinessConfig:
    return BusinessConfig(
        slug=row.slug,
        phone_numbers=tuple(n.number for n in row.numbers),
        templates=tuple(_template_config(t) for t in sorted(row.templates, key=_template_name)),
        tools=tuple(row.tools),
        opening_hours=_pairs(row.opening_hours),
        dtmf_actions=_pairs(row.dtmf_actions),
        http_tools=tuple(HttpTool(**tool) for tool in row.http_tools),
        greeting_timing=GreetingTiming(row.greeting_timing),
        id=row.id,
        **{name: getattr(row, name) for name in _BUSINESS_FIELDS},
    )


def _put_call_control(row: models.Business, business: BusinessConfig) -> None:
    """The JSON columns, as lists (new ones each time, so the change is always seen)."""
    row.tools = list(business.tools)
    row.opening_hours = [[day, ranges] for day, ranges in business.opening_hours]
    row.dtmf_actions = [[key, action] for key, action in business.dtmf_actions]
    row.http_tools = [dataclasses.asdict(tool) for tool in business.http_tools]


def _pairs(rows: list[list[str]]) -> tuple[tuple[str, str], ...]:
    return tuple((first, second) for first, second in rows)


_template_name = attrgetter("name")


# -- calls --------------------------------------------------------------------------------
def _lock_call(call_sid: str, *columns: _Column) -> Select[*tuple[Any, ...]]:
    """The call's id and the columns given, the row locked until commit (PostgreSQL)."""
    return (
        select(models.Call.id, *columns)
        .where(models.Call.call_sid == call_sid)
        .with_for_update(of=models.Call)
    )


def _key_query() -> Select[models.ApiKey, str]:
    return select(models.ApiKey, models.Business.slug).join(
        models.Business, models.ApiKey.business_id == models.Business.id)


def _stored_key(row: models.ApiKey, business_slug: str) -> StoredKey:
    return StoredKey(row.prefix, business_slug, row.name, row.key_hash, row.created_at,
                     row.revoked_at)


def _business_id(slug: str) -> ScalarSelect[int]:
    return select(models.Business.id).where(models.Business.slug == slug).scalar_subquery()


def _has_status_history() -> ColumnElement[bool]:
    return exists().where(models.CallStatusEvent.call_sid == models.Call.call_sid)


def _has_messages() -> ColumnElement[bool]:
    return exists().where(models.Message.call_sid == models.Call.call_sid)


def _status_order() -> Sequence[_Column]:
    event_ = models.CallStatusEvent
    return (func.coalesce(event_.sequence, -1), event_.at, event_.id)


def _latest_status(call_sid: str) -> ScalarSelect[str]:
    return (
        select(models.CallStatusEvent.status)
        .where(models.CallStatusEvent.call_sid == call_sid)
        .order_by(*(column.desc() for column in _status_order()))
        .limit(1)
        .scalar_subquery()
    )


def _turn_row(call_id: int, position: int, turn: TranscriptTurn) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "position": position,
        "speaker": turn.speaker,
        "text": turn.text,
        "started_ms": turn.started_ms,
        "ended_ms": turn.ended_ms,
        "interrupted": turn.interrupted,
    }


def _stage_row(call_id: int, position: int, stage: TimelineStage) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "position": position,
        "stage": stage.stage,
        "ms": stage.ms,
        "detail": stage.detail,
    }


def _message_row(
    business_id: int | None, record: CallRecord, n: int, message: LeadMessage
) -> dict[str, Any]:
    return {
        "business_id": business_id,
        "call_sid": record.call_sid,
        "message_id": message.message_id or f"{record.call_sid}-{n}",
        "audio_file": message.audio_file,
        "audio_ms": message.audio_ms,
        "name": message.name,
        "phone": message.phone,
        "message": message.message,
        # From the record, not the clock: a record saved again gives the same rows.
        # `started_at` is the stream's start; `taken_ms` counts from the webhook.
        "created_at": record.started_at + timedelta(
            milliseconds=message.taken_ms - _stream_start_ms(record)),
    }


def _stream_start_ms(record: CallRecord) -> float:
    return next((s.ms for s in record.timeline if s.stage == "stream_start"), 0.0)


def _stored_message(row: models.Message, business_slug: str | None) -> StoredMessage:
    return StoredMessage(
        business_slug=business_slug or "",
        call_sid=row.call_sid,
        name=row.name,
        phone=row.phone,
        message=row.message,
        created_at=row.created_at,
        message_id=row.message_id or "",
        audio_file=row.audio_file,
        audio_ms=row.audio_ms,
        handled_at=row.handled_at,
    )


async def _load_call(session: AsyncSession, call_sid: str, business_slug: str | None = None
                     ) -> tuple[models.Call, CallRecord] | None:
    """The call's row and its record with transcript and timeline, in the order recorded.
    With a slug, another business's call is not loaded at all: it answers as quickly as
    one that does not exist (a tenant cannot tell them apart by the time taken)."""
    query = (
        select(models.Call, models.Business.slug)
        .outerjoin(models.Business, models.Call.business_id == models.Business.id)
        .where(models.Call.call_sid == call_sid)
    )
    if business_slug is not None:
        query = query.where(models.Business.slug == business_slug)
    found = (await session.execute(query)).first()
    if found is None:
        return None
    call, slug = found
    turns = await session.scalars(
        select(models.TranscriptTurn)
        .where(models.TranscriptTurn.call_id == call.id)
        .order_by(models.TranscriptTurn.position)
    )
    stages = await session.scalars(
        select(models.TimelineEntry)
        .where(models.TimelineEntry.call_id == call.id)
        .order_by(models.TimelineEntry.position)
    )
    record = _call_record(call, slug)
    record.transcript = [
        TranscriptTurn(t.speaker, t.text, t.started_ms, t.ended_ms, t.interrupted) for t in turns
    ]
    record.timeline = [TimelineStage(s.stage, s.ms, s.detail) for s in stages]
    return call, record


def _call_search(query: CallQuery) -> Select[models.Call, str | None]:
    call = models.Call
    statement = (
        select(call, models.Business.slug)
        .outerjoin(models.Business, call.business_id == models.Business.id)
        .order_by(call.started_at.desc(), call.id.desc())
    )
    if query.business_slug is not None:
        statement = statement.where(models.Business.slug == query.business_slug)
    if query.direction is not None:
        statement = statement.where(call.direction == query.direction.value)
    if query.outcome is not None:
        statement = statement.where(call.outcome == query.outcome)
    if query.started_from is not None:
        statement = statement.where(call.started_at >= query.started_from)
    if query.started_to is not None:
        statement = statement.where(call.started_at < query.started_to)
    if query.text:
        turn = models.TranscriptTurn
        # icontains: lower() on both sides (ILIKE on PostgreSQL), % and _ escaped.
        statement = statement.where(exists().where(
            turn.call_id == call.id, turn.text.icontains(query.text, autoescape=True)))
    return statement


def _call_view(call: models.Call, record: CallRecord, timeline: Sequence[TimelineStage], *,
               with_tool_calls: bool = False) -> CallView:
    return CallView(
        record=record,
        duration_s=duration_s(record.started_at, record.ended_at, call.duration_s),
        greeting_path=timeline_greeting_path(timeline),
        greeting_ms=timeline_greeting_ms(timeline),
        recording=recording_of(call.recording_file, call.recording_ms,
                               call.recording_deleted_at),
        tool_calls=tool_calls(record) if with_tool_calls else (),
    )


def _call_record(call: models.Call, business_slug: str | None) -> CallRecord:
    return CallRecord(
        call_sid=call.call_sid,
        business_slug=business_slug or "",
        direction=call.direction,
        from_number=call.from_number,
        to_number=call.to_number,
        status=call.status,
        outcome=Outcome(call.outcome) if call.outcome else None,
        started_at=call.started_at,
        ended_at=call.ended_at,
        template_name=call.template_name,
        variables=dict(call.variables),
        recording_file=call.recording_file,
        recording_ms=call.recording_ms,
        recording_deleted_at=call.recording_deleted_at,
    )


def _require_aware(*moments: datetime | None) -> None:
    for moment in moments:
        if moment is not None and moment.tzinfo is None:
            raise ValueError(f"naive datetime {moment!r}: pass a timezone-aware one")


def _is_outage(exc: DBAPIError) -> bool:
    """The database went away (or will not serve now), rather than refused the statement:
    a dropped connection, or PostgreSQL's SQLSTATE classes 08 (connection exception), 53
    (insufficient resources) and 57 (operator intervention: shutting down, starting up)."""
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    cause = orig.__cause__ if orig is not None else None
    sqlstate = getattr(orig, "sqlstate", None) or getattr(cause, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in OUTAGE_SQLSTATE_CLASSES


def _enable_sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
