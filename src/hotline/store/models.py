"""The tables: businesses with their numbers and outbound templates, calls, and the messages
the agent took for the businesses.

Rows stay inside the store; the rest of Hotline sees `BusinessConfig` and `CallRecord`.
Pairs and lists in `BusinessConfig` (tools, opening hours, DTMF actions, HTTP tools) are
JSON columns holding lists, so their order survives every database.
Every datetime is timezone-aware in Python and stored in UTC (`UTCDateTime`).
Changing a model means a new Alembic revision in `migrations/versions/`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from hotline.business import DEFAULT_TOOLS

# Deterministic constraint names, so later migrations (and SQLite batch mode) can name them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime, stored in UTC (SQLite keeps no offset: it is implied)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, str]: JSON}


class Business(Base):
    __tablename__ = "businesses"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(16))
    voice: Mapped[str] = mapped_column(String(32))
    greeting: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    tone: Mapped[str] = mapped_column(Text)
    greeting_rules: Mapped[str] = mapped_column(Text)
    knowledge: Mapped[str] = mapped_column(Text)
    policies: Mapped[str] = mapped_column(Text)
    faq: Mapped[str] = mapped_column(Text)
    bot_speaks_first: Mapped[bool] = mapped_column(Boolean, server_default=true())
    timezone: Mapped[str] = mapped_column(String(64), server_default="UTC")
    # Call control (revision 0002). JSON lists: tool names; [weekday, ranges] and
    # [key, action] pairs; {name, description, url, parameters, timeout_s} objects.
    tools: Mapped[list[str]] = mapped_column(JSON, server_default=json.dumps(list(DEFAULT_TOOLS)))
    transfer_number: Mapped[str | None] = mapped_column(String(16))  # E.164
    opening_hours: Mapped[list[list[str]]] = mapped_column(JSON, server_default="[]")
    dtmf_actions: Mapped[list[list[str]]] = mapped_column(JSON, server_default="[]")
    max_call_duration_s: Mapped[int] = mapped_column(Integer, server_default="600")
    http_tools: Mapped[list[dict[str, Any]]] = mapped_column(JSON, server_default="[]")
    # A `GreetingTiming` value, outbound with AMD (revision 0003).
    greeting_timing: Mapped[str] = mapped_column(String(16), server_default="immediate")
    # Call recordings (revision 0006): off by default; the sweeper deletes them after this.
    recording: Mapped[bool] = mapped_column(Boolean, server_default=false())
    recording_retention_days: Mapped[int] = mapped_column(Integer, server_default="30")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # +1 on every save of the business or one of its templates: `Store.config_version()`
    # sums it, so a concurrent save can never hide behind an equal timestamp.
    revision: Mapped[int] = mapped_column(Integer, server_default="0")

    numbers: Mapped[list[PhoneNumber]] = relationship(
        back_populates="business",
        cascade="all, delete-orphan",
        order_by="PhoneNumber.id",
        lazy="raise",
    )
    templates: Mapped[list[OutboundTemplate]] = relationship(
        back_populates="business",
        cascade="all, delete-orphan",
        order_by="OutboundTemplate.name",
        lazy="raise",
    )


class PhoneNumber(Base):
    __tablename__ = "phone_numbers"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(16), unique=True)  # E.164
    business_id: Mapped[int] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), index=True
    )

    business: Mapped[Business] = relationship(back_populates="numbers", lazy="raise")


class OutboundTemplate(Base):
    __tablename__ = "outbound_templates"
    __table_args__ = (UniqueConstraint("business_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    greeting_template: Mapped[str] = mapped_column(Text)
    instructions: Mapped[str] = mapped_column(Text)
    voicemail_template: Mapped[str] = mapped_column(Text, server_default="")
    # A `GreetingTiming` value; NULL: the business's (revision 0003).
    greeting_timing: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime]

    business: Mapped[Business] = relationship(back_populates="templates", lazy="raise")


class Call(Base):
    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    # NULL: a status callback for a call no business was matched to (or since deleted).
    business_id: Mapped[int | None] = mapped_column(
        ForeignKey("businesses.id", ondelete="SET NULL"), index=True
    )
    direction: Mapped[str] = mapped_column(String(16))  # "inbound" | "outbound" | "" (stub)
    from_number: Mapped[str] = mapped_column(String(32))
    to_number: Mapped[str] = mapped_column(String(32))
    template_name: Mapped[str | None] = mapped_column(String(64))
    variables: Mapped[dict[str, str]]
    status: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]
    # Twilio's CallDuration, from the final status callback.
    duration_s: Mapped[int | None] = mapped_column(Integer)
    # Both sides in one WAV, relative to HOTLINE_DATA_DIR (revision 0006); kept NULL with
    # `recording_deleted_at` set once the retention sweeper removed the file.
    recording_file: Mapped[str | None] = mapped_column(Text)
    recording_ms: Mapped[int | None] = mapped_column(Integer)
    recording_deleted_at: Mapped[datetime | None]


class TranscriptTurn(Base):
    __tablename__ = "transcript_turns"
    __table_args__ = (UniqueConstraint("call_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    position: Mapped[int]
    speaker: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    started_ms: Mapped[int]
    ended_ms: Mapped[int]
    interrupted: Mapped[bool] = mapped_column(Boolean, server_default=false())


class TimelineEntry(Base):
    __tablename__ = "timeline_entries"
    __table_args__ = (UniqueConstraint("call_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    position: Mapped[int]
    stage: Mapped[str] = mapped_column(String(64))
    ms: Mapped[float] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(Text)


class CallStatusEvent(Base):
    """One Twilio status callback, as it arrived (kept even if the call row is a stub)."""

    __tablename__ = "call_status_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(32))
    sequence: Mapped[int | None]
    at: Mapped[datetime]


class Message(Base):
    """A message the agent took for the business (`take_message`), kept after the call.

    Keyed by `call_sid` rather than a foreign key to `calls`, so that the message outlives
    whatever happens to the call row; `business_id` is NULL once the business is deleted.
    """

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int | None] = mapped_column(
        ForeignKey("businesses.id", ondelete="SET NULL"), index=True
    )
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    # Text, not bounded strings: what the model heard must never make the write fail.
    name: Mapped[str] = mapped_column(Text)
    phone: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(index=True)
    # f"{call_sid}-{n}": stable when the call's record is written again (migration 0004).
    message_id: Mapped[str | None] = mapped_column(String(96), index=True, unique=True)
    # A recorded voice message (engine unavailable): its WAV, relative to HOTLINE_DATA_DIR.
    audio_file: Mapped[str | None] = mapped_column(Text)
    audio_ms: Mapped[int | None]
    # Marked handled by the business (API or dashboard); NULL: still to do (revision 0006).
    handled_at: Mapped[datetime | None]


class ApiKey(Base):
    """A business's API key (revision 0005): only its HMAC is kept (`hotline.keys`)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The key dies with its business.
    business_id: Mapped[int] = mapped_column(
        ForeignKey("businesses.id", ondelete="CASCADE"), index=True
    )
    prefix: Mapped[str] = mapped_column(String(16), unique=True)  # not secret: lists the key
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64))  # hex HMAC-SHA256(HOTLINE_KEY_SECRET, key)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
