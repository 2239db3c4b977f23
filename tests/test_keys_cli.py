"""Business API keys in the store and through `hotline keys …` (Typer's CliRunner against
the test database): the key is printed once, only its HMAC is stored, list never shows it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from sqlalchemy import inspect, select
from typer.testing import CliRunner, Result

import hotline.cli.keys  # noqa: F401  (registers its commands on the app)
from hotline.cli import app
from hotline.errors import ApiKeyError, BusinessNotFound
from hotline.keys import KEY_PATTERN, key_hash, key_matches, new_key
from hotline.store import Store, models
from tests.factories import make_business
from tests.test_store import migrate

SECRET = "cli-test-key-secret"
T = TypeVar("T")


def with_store(database_url: str, action: Callable[[Store], Awaitable[T]]) -> T:
    """Run `action` on the test database in its own event loop (the CLI runs its own)."""

    async def run() -> T:
        store = Store(database_url)
        try:
            await store.upgrade()
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def keys(database_url: str, *args: str, secret: str | None = SECRET) -> Result:
    env = {"HOTLINE_DATABASE_URL": database_url, "COLUMNS": "200"}
    if secret is not None:
        env["HOTLINE_KEY_SECRET"] = secret
    return CliRunner().invoke(app, ["keys", *args], env=env)


async def stored_hashes(store: Store) -> list[str]:
    async with store.engine.connect() as connection:
        return list((await connection.execute(select(models.ApiKey.key_hash))).scalars())


def test_keys_are_created_listed_and_revoked(database_url: str) -> None:
    with_store(database_url, lambda store: store.save_business(make_business()))
    created = keys(database_url, "create", "--business", "acme-dental", "--name", "front desk")
    assert created.exit_code == 0, created.output
    (key,) = re.findall(r"hk_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", created.output)
    assert KEY_PATTERN.match(key) and "will not be shown again" in created.output
    prefix = key.split("_")[1]
    (stored,) = with_store(database_url, lambda store: store.list_api_keys())
    assert (stored.prefix, stored.business_slug, stored.name) == (prefix, "acme-dental",
                                                                   "front desk")
    assert stored.revoked_at is None and key_matches(SECRET, key, stored.key_hash)
    # The key itself is nowhere in the database: only its HMAC.
    assert with_store(database_url, stored_hashes) == [key_hash(SECRET, key)]

    listed = keys(database_url, "list")
    assert listed.exit_code == 0, listed.output
    assert prefix in listed.output and "front desk" in listed.output
    assert key not in listed.output and stored.key_hash not in listed.output
    other = keys(database_url, "list", "--business", "other")
    assert prefix not in other.output and "0 keys" in other.output

    revoked = keys(database_url, "revoke", prefix)
    assert revoked.exit_code == 0, revoked.output
    assert "revoked key" in revoked.output
    first = with_store(database_url, lambda store: store.find_api_key(prefix))
    assert first is not None and first.revoked_at is not None
    assert keys(database_url, "revoke", prefix).exit_code == 0  # again: the first date kept
    again = with_store(database_url, lambda store: store.find_api_key(prefix))
    assert again is not None and again.revoked_at == first.revoked_at
    (row,) = [line for line in keys(database_url, "list").output.splitlines() if prefix in line]
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row)) == 2  # created, revoked


@pytest.mark.parametrize(("args", "secret", "says"), [
    (("create", "--business", "nobody"), SECRET, "no business 'nobody'"),
    (("create", "--business", "acme-dental"), None, "HOTLINE_KEY_SECRET is not set"),
    (("revoke", "deadbeef"), SECRET, "no API key with prefix 'deadbeef'"),
], ids=["unknown business", "no secret", "unknown prefix"])
def test_key_commands_fail_plainly(database_url: str, args: tuple[str, ...],
                                   secret: str | None, says: str) -> None:
    with_store(database_url, lambda store: store.save_business(make_business()))
    result = keys(database_url, *args, secret=secret)
    assert result.exit_code == 1, result.output
    assert says in result.output and "Traceback" not in result.output
    assert with_store(database_url, lambda store: store.list_api_keys()) == []


async def test_store_refuses_unknown_business_and_prefix(store: Store) -> None:
    key = new_key(SECRET)
    with pytest.raises(BusinessNotFound):
        await store.create_api_key("nobody", "", key.prefix, key.key_hash)
    with pytest.raises(ApiKeyError):
        await store.revoke_api_key(key.prefix)
    assert await store.find_api_key(key.prefix) is None


async def test_a_key_dies_with_its_business_and_0005_downgrades(database_url: str) -> None:
    store = Store(database_url)
    try:
        await store.upgrade()
        await store.save_business(make_business())
        key = new_key(SECRET)
        await store.create_api_key("acme-dental", "", key.prefix, key.key_hash)
        async with store.engine.connect() as connection, connection.begin():
            await connection.execute(models.Business.__table__.delete())
        assert await store.list_api_keys() == []
        assert await stored_hashes(store) == []
        await migrate(store, "0004", down=True)
        async with store.engine.connect() as connection:
            tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
        assert "api_keys" not in tables
        await store.upgrade()
        assert await store.list_api_keys() == []
    finally:
        await store.close()
