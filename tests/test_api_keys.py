"""Business API keys over real HTTP: two businesses with a key each, the admin token, and
every /api route scoped to the key's business (another tenant's anything answers 404)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from hotline.admin.auth import FailureLimiter
from hotline.audio import mulaw
from hotline.core.record import LeadMessage
from hotline.errors import ApiKeyError
from hotline.keys import key_prefix, new_key
from hotline.sim.script import CallScript, Hangup
from hotline.store import Store
from tests.factories import make_business
from tests.stack import Stack, running_stack
from tests.test_api import call_with_messages

pytestmark = pytest.mark.sockets

ADMIN_TOKEN = "admin-s3cret"
KEY_SECRET = "server-key-secret-for-tests"
OTHER_NUMBER = "+15005550007"
CALLEE = "+15550002222"


def place(business: str) -> dict[str, object]:
    return {"business": business, "to": CALLEE, "template": "reminder",
            "variables": {"name": "Dana"}}


class Tenants:
    def __init__(self, stack: Stack, acme: str, bolt: str) -> None:
        self.stack, self.acme, self.bolt = stack, acme, bolt

    def client(self, token: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.AsyncClient(base_url=self.stack.server.url, headers=headers,
                                 trust_env=False)


async def issue(store: Store, business: str) -> str:
    key = new_key(KEY_SECRET)
    await store.create_api_key(business, "test", key.prefix, key.key_hash)
    return key.key


@pytest.fixture
async def tenants(database_url: str, tmp_path: Path) -> AsyncIterator[Tenants]:
    businesses = [make_business(), make_business(slug="bolt-plumbing", name="Bolt Plumbing",
                                                 phone_numbers=(OTHER_NUMBER,))]
    async with running_stack(database_url, tmp_path, businesses, api_token=ADMIN_TOKEN,
                             key_secret=KEY_SECRET) as stack:
        store = stack.services.store
        acme, bolt = await issue(store, "acme-dental"), await issue(store, "bolt-plumbing")
        # A call with a message (and its voice audio) for each business.
        data_dir = Path(stack.services.settings.data_dir)
        (data_dir / "messages").mkdir(parents=True, exist_ok=True)
        for sid, slug in (("CAacme", "acme-dental"), ("CAbolt", "bolt-plumbing")):
            (data_dir / "messages" / f"{sid}-1.wav").write_bytes(
                mulaw.wav_bytes_from_mulaw(mulaw.silence(200)))
            record = call_with_messages(sid, 0, slug)
            record.messages = [LeadMessage(f"{slug} caller", "+15550001111", "call me", 1_000,
                                           message_id=f"{sid}-1",
                                           audio_file=f"messages/{sid}-1.wav", audio_ms=200)]
            await store.save_call(record)
        yield Tenants(stack, acme, bolt)


# -- every route, scoped ------------------------------------------------------------------------
async def test_a_business_key_cannot_place_a_call_for_another_business(
        tenants: Tenants) -> None:
    stack = tenants.stack
    stack.twilio.callee_scripts[CALLEE] = CallScript([Hangup()])
    async with tenants.client(tenants.acme) as http:
        other = await http.post("/api/calls", json=place("bolt-plumbing"))
        unknown = await http.post("/api/calls", json=place("nobody"))
        # Its own business, but with another tenant's number as the caller id.
        spoofed = await http.post("/api/calls", json={**place("acme-dental"),
                                                      "from": OTHER_NUMBER})
        assert stack.twilio.created == []
        own = await http.post("/api/calls", json=place("acme-dental"))
    for response in (other, unknown):  # another tenant's and no tenant's: the same answer
        assert response.status_code == 404, response.text
        assert "Bolt" not in response.text and OTHER_NUMBER not in response.text
    assert spoofed.status_code == 422, spoofed.text
    assert "must be one of business acme-dental's numbers" in spoofed.json()["detail"]
    assert own.status_code == 201, own.text
    assert own.json()["business"] == "acme-dental"
    assert len(stack.twilio.created) == 1
    await stack.twilio.wait_for_call(own.json()["call_sid"], timeout=30)


async def test_a_business_key_reads_only_its_own_calls(tenants: Tenants) -> None:
    async with tenants.client(tenants.acme) as http:
        own = await http.get("/api/calls/CAacme")
        other = await http.get("/api/calls/CAbolt")
        missing = await http.get("/api/calls/CAnone")
    async with tenants.client(tenants.bolt) as http:
        bolt_own = await http.get("/api/calls/CAbolt")
        bolt_other = await http.get("/api/calls/CAacme")
    async with tenants.client(ADMIN_TOKEN) as http:
        admin = [await http.get(f"/api/calls/{sid}") for sid in ("CAacme", "CAbolt")]
    assert own.status_code == 200 and own.json()["business"] == "acme-dental"
    assert bolt_own.status_code == 200 and bolt_own.json()["business"] == "bolt-plumbing"
    for response, sid in ((other, "CAbolt"), (bolt_other, "CAacme")):
        assert response.status_code == 404, response.text
        assert response.json() == {"detail": f"no call {sid}"}  # as if it did not exist
    assert missing.status_code == 404
    assert [r.json()["business"] for r in admin] == ["acme-dental", "bolt-plumbing"]


async def test_a_business_key_lists_only_its_own_messages(tenants: Tenants) -> None:
    async with tenants.client(tenants.acme) as http:
        own = await http.get("/api/messages")
        filtered_other = await http.get("/api/messages", params={"business": "bolt-plumbing"})
        filtered_own = await http.get("/api/messages", params={"business": "acme-dental"})
    async with tenants.client(tenants.bolt) as http:
        bolt = await http.get("/api/messages")
    async with tenants.client(ADMIN_TOKEN) as http:
        admin = await http.get("/api/messages")
    assert [m["id"] for m in own.json()] == ["CAacme-1"]
    assert [m["id"] for m in filtered_own.json()] == ["CAacme-1"]
    assert filtered_other.status_code == 200 and filtered_other.json() == []
    assert [m["id"] for m in bolt.json()] == ["CAbolt-1"]
    assert sorted(m["id"] for m in admin.json()) == ["CAacme-1", "CAbolt-1"]


async def test_a_business_key_downloads_only_its_own_message_audio(tenants: Tenants) -> None:
    async with tenants.client(tenants.acme) as http:
        own = await http.get("/api/messages/CAacme-1/audio")
        other = await http.get("/api/messages/CAbolt-1/audio")
    async with tenants.client(ADMIN_TOKEN) as http:
        admin = await http.get("/api/messages/CAbolt-1/audio")
    assert own.status_code == 200 and own.headers["content-type"] == "audio/wav"
    assert other.status_code == 404 and not other.content.startswith(b"RIFF")
    assert other.json() == {"detail": "no audio for message CAbolt-1"}
    assert admin.status_code == 200 and admin.content == own.content


# -- refused keys -------------------------------------------------------------------------------
async def test_revoked_forged_and_unknown_keys_are_refused(
        tenants: Tenants, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = tenants.stack.services.store
    prefix = key_prefix(tenants.bolt)
    assert prefix is not None
    forged = tenants.acme[:-4] + ("AAAA" if not tenants.acme.endswith("AAAA") else "BBBB")
    other_prefix = f"hk_{prefix}_{tenants.acme.split('_', 2)[2]}"  # bolt's prefix, acme's tail
    unknown = new_key(KEY_SECRET).key  # well formed, never stored
    wrong_secret = new_key("another server's secret")
    await store.create_api_key("acme-dental", "elsewhere", wrong_secret.prefix,
                               wrong_secret.key_hash)
    revoked = await store.revoke_api_key(prefix)
    assert revoked.revoked_at is not None
    presented = [tenants.bolt, forged, other_prefix, unknown, wrong_secret.key]
    for key in presented:
        async with tenants.client(key) as http:
            response = await http.get("/api/messages")
        assert response.status_code == 401, (key, response.text)
        assert response.json() == {"detail": "missing or wrong bearer token"}
    async with tenants.client(tenants.acme) as http:
        assert (await http.get("/api/messages")).status_code == 200  # the others still work
    failures = [r for r in caplog.records if "authentication failed" in r.getMessage()]
    assert len(failures) == len(presented)
    for record in caplog.records:
        line = record.getMessage() + (record.exc_text or "")
        for secret in (*presented, tenants.acme, KEY_SECRET, ADMIN_TOKEN):
            assert secret not in line, f"{record.name} logged a secret: {line!r}"
        assert "hk_" not in line


async def test_with_no_admin_token_only_a_request_without_a_header_is_let_in(
        database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, [make_business()],
                             key_secret=KEY_SECRET) as stack:
        key = await issue(stack.services.store, "acme-dental")
        async with httpx.AsyncClient(base_url=stack.server.url, trust_env=False) as http:
            open_ = await http.get("/api/messages")
            wrong = await http.get("/api/messages", headers={"Authorization": "Bearer nope"})
            scoped = await http.get("/api/messages", headers={"Authorization": f"Bearer {key}"},
                                    params={"business": "other"})
    assert open_.status_code == 200
    assert wrong.status_code == 401
    assert scoped.status_code == 200 and scoped.json() == []


# -- rate limit ----------------------------------------------------------------------------------
async def test_failed_attempts_are_rate_limited_per_address(tenants: Tenants) -> None:
    async with tenants.client("hk_00000000_" + "x" * 43) as http:
        statuses = [(await http.get("/api/messages")).status_code for _ in range(10)]
        limited = await http.get("/api/messages")
    async with tenants.client(tenants.acme) as http:
        # The address is blocked whatever it presents, the right key too, until it cools.
        still = await http.get("/api/messages")
    assert statuses == [401] * 10
    assert limited.status_code == 429, limited.text
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert still.status_code == 429


def test_the_failure_window_slides() -> None:
    now = [1000.0]
    limiter = FailureLimiter(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.failed("10.0.0.1")
        now[0] += 10
    assert limiter.retry_after("10.0.0.1") == 30  # the first failure ages out at 1060
    assert limiter.retry_after("10.0.0.2") is None  # another address is not held up
    now[0] = 1060.5
    assert limiter.retry_after("10.0.0.1") is None  # 2 failures left in the window
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 10
    now[0] = 2000
    assert limiter.retry_after("10.0.0.1") is None
    assert limiter._failures == {}  # quiet addresses are forgotten


def test_addresses_that_never_come_back_are_forgotten() -> None:
    # An address's failures are dropped when it asks again; one that never does must not
    # stay in the table for ever (many addresses, each failing once, would fill memory).
    now = [0.0]
    limiter = FailureLimiter(max_failures=3, window_s=60, clock=lambda: now[0], sweep_above=8)
    for n in range(100):
        limiter.failed(f"10.0.{n}.1")
        now[0] += 10  # six addresses fail within any window
    assert limiter.addresses() <= 16
    assert limiter.retry_after("10.0.99.1") is None  # one failure: not held up


# -- keys in the store ----------------------------------------------------------------------------
def test_no_key_is_made_without_the_server_secret() -> None:
    for secret in (None, ""):
        with pytest.raises(ApiKeyError, match="HOTLINE_KEY_SECRET"):
            new_key(secret)
    key = new_key(KEY_SECRET)
    assert key_prefix(key.key) == key.prefix and key.key.startswith(f"hk_{key.prefix}_")
    assert key.key not in key.key_hash and len(key.key_hash) == 64
    assert key_prefix(key.key + "x") is None and key_prefix("hk_xyz_abc") is None
