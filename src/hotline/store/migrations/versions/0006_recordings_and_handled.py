"""Call recordings and handled messages (the owner's dashboard): a business opts in to
recordings with a retention in days; a call keeps its recording's WAV path (relative to
HOTLINE_DATA_DIR), its length, and when the sweeper deleted it; a message is marked handled.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# models.UTCDateTime stores this type, as in 0001.
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("businesses", recreate="never") as batch:
        batch.add_column(sa.Column("recording", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("recording_retention_days", sa.Integer(), nullable=False,
                                   server_default="30"))
    with op.batch_alter_table("calls", recreate="never") as batch:
        batch.add_column(sa.Column("recording_file", sa.Text(), nullable=True))
        batch.add_column(sa.Column("recording_ms", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("recording_deleted_at", UTC_DATETIME, nullable=True))
    with op.batch_alter_table("messages", recreate="never") as batch:
        batch.add_column(sa.Column("handled_at", UTC_DATETIME, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages", recreate="never") as batch:
        batch.drop_column("handled_at")
    with op.batch_alter_table("calls", recreate="never") as batch:
        batch.drop_column("recording_deleted_at")
        batch.drop_column("recording_ms")
        batch.drop_column("recording_file")
    with op.batch_alter_table("businesses", recreate="never") as batch:
        batch.drop_column("recording_retention_days")
        batch.drop_column("recording")
