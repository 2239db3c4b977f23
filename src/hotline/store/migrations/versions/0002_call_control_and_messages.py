"""Call control per business (tools, transfer number, opening hours, DTMF actions, call
length limit, HTTP tools), voicemail per outbound template, and the messages the agent takes.

Existing businesses get the default tools (end_call, take_message, check_hours), no
transfer number, no hours, no DTMF actions, a 600 s limit and no HTTP tools; existing
templates get no voicemail (hang up on an answering machine).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)
# hotline.business.DEFAULT_TOOLS as this revision was written (a migration never changes).
DEFAULT_TOOLS_JSON = '["end_call", "take_message", "check_hours"]'
BUSINESS_COLUMNS = (
    "tools", "transfer_number", "opening_hours", "dtmf_actions", "max_call_duration_s",
    "http_tools",
)  # fmt: skip


def upgrade() -> None:
    # Batch mode, as every revision: adding columns with constant defaults is a plain
    # ALTER TABLE … ADD COLUMN on SQLite too, so nothing is copied.
    with op.batch_alter_table("businesses") as batch:
        batch.add_column(
            sa.Column("tools", sa.JSON(), server_default=DEFAULT_TOOLS_JSON, nullable=False)
        )
        batch.add_column(sa.Column("transfer_number", sa.String(length=16), nullable=True))
        batch.add_column(
            sa.Column("opening_hours", sa.JSON(), server_default="[]", nullable=False)
        )
        batch.add_column(sa.Column("dtmf_actions", sa.JSON(), server_default="[]", nullable=False))
        batch.add_column(
            sa.Column("max_call_duration_s", sa.Integer(), server_default="600", nullable=False)
        )
        batch.add_column(sa.Column("http_tools", sa.JSON(), server_default="[]", nullable=False))
    with op.batch_alter_table("outbound_templates") as batch:
        batch.add_column(
            sa.Column("voicemail_template", sa.Text(), server_default="", nullable=False)
        )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("business_id", sa.Integer(), nullable=True),
        sa.Column("call_sid", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("phone", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_messages_business_id_businesses"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    op.create_index(op.f("ix_messages_business_id"), "messages", ["business_id"])
    op.create_index(op.f("ix_messages_call_sid"), "messages", ["call_sid"])
    op.create_index(op.f("ix_messages_created_at"), "messages", ["created_at"])


def downgrade() -> None:
    op.drop_table("messages")
    # Never copy-and-move here: on SQLite (foreign keys on) dropping the old `businesses`
    # table would cascade to every number and template. These columns carry no index or
    # constraint, so SQLite >= 3.35 drops them in place with ALTER TABLE … DROP COLUMN.
    with op.batch_alter_table("outbound_templates", recreate="never") as batch:
        batch.drop_column("voicemail_template")
    with op.batch_alter_table("businesses", recreate="never") as batch:
        for name in reversed(BUSINESS_COLUMNS):
            batch.drop_column(name)
