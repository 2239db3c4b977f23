"""Greeting timing for outbound calls with answering-machine detection, per business and per
outbound template (`hotline.business.GreetingTiming`).

Existing businesses get `immediate`, the default (the greeting starts at pickup); existing
templates get NULL, which means the business's.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Constant defaults: a plain ALTER TABLE … ADD COLUMN on SQLite too, nothing copied.
    with op.batch_alter_table("businesses") as batch:
        batch.add_column(
            sa.Column(
                "greeting_timing", sa.String(length=16), server_default="immediate",
                nullable=False,
            )
        )
    with op.batch_alter_table("outbound_templates") as batch:
        batch.add_column(sa.Column("greeting_timing", sa.String(length=16), nullable=True))


def downgrade() -> None:
    # In place (SQLite >= 3.35 ALTER TABLE … DROP COLUMN), never copy-and-move: dropping the
    # old `businesses` table would cascade to every number and template (see 0002).
    with op.batch_alter_table("outbound_templates", recreate="never") as batch:
        batch.drop_column("greeting_timing")
    with op.batch_alter_table("businesses", recreate="never") as batch:
        batch.drop_column("greeting_timing")
