"""Alembic, driven from code: the migrations ship inside the package, no alembic.ini needed.

Everything here runs on a sync-facing connection handed over by
`AsyncConnection.run_sync`, inside the caller's transaction.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant: PostgreSQL holds this advisory lock while one instance migrates.
_PG_MIGRATION_LOCK = 0x686F746C696E65  # "hotline"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the store's migrations have {len(heads)} heads: merge them")
    return heads[0]


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(connection: Connection) -> str | None:
    """Migrate to head unless already there; returns the revision found before."""
    if connection.dialect.name == "postgresql":
        # Instances starting together migrate one after the other, not at once.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    before = current_revision(connection)
    if before != head_revision():
        command.upgrade(alembic_config(connection), "head")
    return before
