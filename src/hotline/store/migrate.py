"""Alembic, driven from code: the migrations ship inside the package, no alembic.ini needed.

Everything here runs on a sync-facing connection handed over by
`AsyncConnection.run_sync`, inside the caller's transaction.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, Column, text
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant: PostgreSQL holds this advisory lock while one instance migrates.
_PG_MIGRATION_LOCK = 0x686F746C696E65  # "hotline"
# A constant default as databases report it: '…', maybe in brackets, maybe with a ::cast.
_QUOTED_DEFAULT = re.compile(r"^\(?'(?P<value>.*)'(::[a-z ]+)?\)?$", re.DOTALL)


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


def compare_server_default(
    _context: Any,
    inspected_column: Column[Any],
    metadata_column: Column[Any],
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """Autogenerate's server-default comparison (`compare_server_default=` in env.py) for
    the two cases Alembic gets wrong: a JSON default on PostgreSQL (Alembic asks the server
    `json = json`, an operator PostgreSQL lacks) and an empty-string default on SQLite
    (reported as changed on every run). Both are constants: compare their text. Anything
    else: None, Alembic's own comparison."""
    empty_string = getattr(metadata_default, "arg", None) == ""
    if not isinstance(metadata_column.type, JSON) and not empty_string:
        return None
    return _constant(inspected_default) != _constant(rendered_metadata_default)


def _constant(default: str | None) -> str | None:
    if default is None:
        return None
    match = _QUOTED_DEFAULT.match(default.strip())
    return match["value"] if match else default
