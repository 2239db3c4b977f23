"""Messages with audio: a stable message id, and the recorded voice message's WAV.

When no engine can be had, the caller's voice message is recorded; its WAV lives under
HOTLINE_DATA_DIR (`audio_file`, relative to it) with its length (`audio_ms`). Every message
gets a stable id, f"{call_sid}-{n}" (n counting the call's messages from 1, in order), so a
record written again gives the same ids. Existing messages get theirs here; they have no
audio.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns: a plain ALTER TABLE … ADD COLUMN on SQLite too, nothing copied.
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("message_id", sa.String(length=96), nullable=True))
        batch.add_column(sa.Column("audio_file", sa.Text(), nullable=True))
        batch.add_column(sa.Column("audio_ms", sa.Integer(), nullable=True))
    # Portable SQL (SQLite and PostgreSQL): n = the message's rank within its call.
    op.execute(
        "UPDATE messages SET message_id = call_sid || '-' || CAST(("
        "SELECT COUNT(*) FROM messages AS earlier WHERE earlier.call_sid = messages.call_sid "
        "AND earlier.id <= messages.id) AS VARCHAR(12))"
    )
    op.create_index(op.f("ix_messages_message_id"), "messages", ["message_id"], unique=True)


def downgrade() -> None:
    op.drop_index(op.f("ix_messages_message_id"), table_name="messages")
    # In place (SQLite >= 3.35 ALTER TABLE … DROP COLUMN), as in 0003.
    with op.batch_alter_table("messages", recreate="never") as batch:
        batch.drop_column("audio_ms")
        batch.drop_column("audio_file")
        batch.drop_column("message_id")
