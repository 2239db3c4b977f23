"""/api/v1/businesses over real HTTP: the admin's CRUD, two businesses with a key each
(another tenant's business answers 404), validation as 422 with the field, and a PATCHed
greeting heard on the very next call through the simulated phone."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hotline.sim.script import CallScript, Hangup, WaitForAgentSilence
from tests import test_api_keys
from tests.factories import TEST_NUMBER
from tests.test_api_keys import ADMIN_TOKEN, OTHER_NUMBER, Tenants

pytestmark = pytest.mark.sockets
tenants = test_api_keys.tenants  # the fixture: two businesses, a key each, the admin token

CALLER = "+15550001111"
NEW_NUMBER = "+15005550010"
LISTEN_THEN_HANG_UP = CallScript([WaitForAgentSilence(quiet_ms=500, timeout_ms=20_000), Hangup()])


def new_business(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "slug": "cedar-cafe", "name": "Cedar Cafe", "language": "en", "voice": "marin",
        "greeting": "Cedar Cafe, hello!", "numbers": [NEW_NUMBER],
        "prompt": {"role": "You answer the phone at Cedar Cafe.", "tone": "friendly",
                   "knowledge": "We bake bread."},
        "timezone": "Asia/Jerusalem", "hours": {"sun": "08:00-14:00,16:00-20:00"},
        "tools": ["end_call", "transfer_to_human"], "transfer_number": "+15005550011",
        "dtmf": {"0": "transfer_to_human"},
        "http_tools": [{"name": "book_table", "description": "Book a table",
                        "url": "https://cafe.example/book",
                        "parameters": {"type": "object", "properties": {}}}],
        "greeting_timing": "after_amd", "max_call_duration_s": 300,
    }
    body.update(overrides)
    return body


async def test_the_admin_creates_reads_lists_updates_and_deletes(tenants: Tenants) -> None:
    services = tenants.stack.services
    async with tenants.client(ADMIN_TOKEN) as http:
        created = await http.post("/api/v1/businesses", json=new_business())
        assert created.status_code == 201, created.text
        again = await http.post("/api/v1/businesses", json=new_business())
        read = await http.get("/api/v1/businesses/cedar-cafe")
        listed = await http.get("/api/v1/businesses")
        patched = await http.patch("/api/v1/businesses/cedar-cafe", json={
            "greeting": "Cedar Cafe, good day!", "prompt": {"tone": "calm"},
            "hours": {"mon": "09:00-12:00"}})
        # The config cache has it at once: the number rings the business, as patched.
        cached = services.config.business_for_number(NEW_NUMBER)
        deleted = await http.delete("/api/v1/businesses/cedar-cafe")
        gone = await http.get("/api/v1/businesses/cedar-cafe")
        deleted_again = await http.delete("/api/v1/businesses/cedar-cafe")
        openapi = await http.get("/api/openapi.json")
    body = created.json()
    assert body["slug"] == "cedar-cafe" and body["numbers"] == [NEW_NUMBER]
    assert body["hours"] == {"sun": "08:00-14:00,16:00-20:00"}
    assert body["dtmf"] == {"0": "transfer_to_human"}
    assert body["http_tools"][0]["name"] == "book_table"
    assert body["greeting_timing"] == "after_amd" and body["max_call_duration_s"] == 300
    assert again.status_code == 409
    assert read.status_code == 200 and read.json() == body
    assert [b["slug"] for b in listed.json()] == ["acme-dental", "bolt-plumbing", "cedar-cafe"]
    assert patched.status_code == 200, patched.text
    assert patched.json()["greeting"] == "Cedar Cafe, good day!"
    assert patched.json()["prompt"]["tone"] == "calm"
    assert patched.json()["prompt"]["role"] == "You answer the phone at Cedar Cafe."  # kept
    assert patched.json()["hours"] == {"mon": "09:00-12:00"}
    assert cached is not None and cached.greeting == "Cedar Cafe, good day!"
    assert deleted.status_code == 204
    assert services.config.business_for_number(NEW_NUMBER) is None
    assert gone.status_code == 404 and deleted_again.status_code == 404
    assert openapi.status_code == 200
    paths = openapi.json()["paths"]
    assert {"/api/v1/businesses", "/api/v1/businesses/{slug}", "/api/calls"} <= paths.keys()
    assert set(paths["/api/v1/businesses/{slug}"]) == {"get", "patch", "delete"}


async def test_a_business_key_reads_and_updates_only_its_own_business(
        tenants: Tenants) -> None:
    for key, own, other, other_number in (
            (tenants.acme, "acme-dental", "bolt-plumbing", OTHER_NUMBER),
            (tenants.bolt, "bolt-plumbing", "acme-dental", TEST_NUMBER)):
        async with tenants.client(key) as http:
            listed = await http.get("/api/v1/businesses")
            read_own = await http.get(f"/api/v1/businesses/{own}")
            read_other = await http.get(f"/api/v1/businesses/{other}")
            patch_own = await http.patch(f"/api/v1/businesses/{own}",
                                         json={"name": f"{own} renamed"})
            patch_other = await http.patch(f"/api/v1/businesses/{other}",
                                           json={"name": "hijacked"})
            create = await http.post("/api/v1/businesses", json=new_business())
            delete_own = await http.delete(f"/api/v1/businesses/{own}")
            delete_other = await http.delete(f"/api/v1/businesses/{other}")
            missing = await http.get("/api/v1/businesses/nobody")
        assert [b["slug"] for b in listed.json()] == [own]
        assert read_own.status_code == 200 and read_own.json()["slug"] == own
        assert patch_own.status_code == 200 and patch_own.json()["name"] == f"{own} renamed"
        for response in (read_other, patch_other, delete_other):
            assert response.status_code == 404, response.text
            assert response.json() == {"detail": f"no business {other}"}  # as if none
            assert other_number not in response.text
        assert missing.status_code == 404
        assert create.status_code == 403 and delete_own.status_code == 403
    async with tenants.client(ADMIN_TOKEN) as http:
        names = {b["slug"]: b["name"] for b in (await http.get("/api/v1/businesses")).json()}
    # Nothing of the other tenant changed, nothing was created or deleted.
    assert names == {"acme-dental": "acme-dental renamed",
                     "bolt-plumbing": "bolt-plumbing renamed"}


async def test_no_key_is_refused(tenants: Tenants) -> None:
    async with tenants.client(None) as http:
        response = await http.get("/api/v1/businesses")
    assert response.status_code == 401


@pytest.mark.parametrize(("body", "loc", "reason"), [
    (new_business(owner="me"), ["body", "owner"], "Extra inputs are not permitted"),
    (new_business(prompt={"role": "x", "mood": "y"}), ["body", "prompt", "mood"],
     "Extra inputs are not permitted"),
    (new_business(numbers=["0501234567"]), ["body", "numbers", 0], "not an E.164"),
    (new_business(transfer_number="12"), ["body", "transfer_number"], "not an E.164"),
    (new_business(prompt={"role": "You are the receptionist. " * 60}), ["body", "prompt"],
     "over its limit"),
    (new_business(hours={"sun": "08:00-14:00,13:00-20:00"}), ["body", "hours"], "overlapping"),
    (new_business(hours={"sun": "8 to 2"}), ["body", "hours"], "8 to 2"),
    (new_business(hours={"someday": "08:00-14:00"}), ["body", "hours"], "someday"),
    (new_business(tools=["launch_rockets"]), ["body", "tools", 0], "not a built-in tool"),
    (new_business(dtmf={"5": "dance"}), ["body", "dtmf", 5], "not an action"),
    (new_business(slug="Not A Slug"), ["body", "slug"], "lowercase"),
    (new_business(max_call_duration_s=1), ["body", "max_call_duration_s"], "seconds"),
])
async def test_an_invalid_business_answers_422_naming_the_field(
        tenants: Tenants, body: dict[str, Any], loc: list[object], reason: str) -> None:
    async with tenants.client(ADMIN_TOKEN) as http:
        created = await http.post("/api/v1/businesses", json=body)
        patch_body = {k: v for k, v in body.items() if k != "slug"}
        # (A slug is not patchable: the rest of that body is valid, so it is not sent.)
        patched = (None if loc == ["body", "slug"] else
                   await http.patch("/api/v1/businesses/acme-dental", json=patch_body))
        listed = await http.get("/api/v1/businesses")
    assert created.status_code == 422, created.text
    [error] = [e for e in created.json()["detail"] if e["loc"] == loc]
    assert reason in error["msg"], error
    if patched is not None:  # the same rule, the same answer on an update
        assert patched.status_code == 422, patched.text
        assert any(e["loc"] == loc and reason in e["msg"] for e in patched.json()["detail"])
    assert [b["slug"] for b in listed.json()] == ["acme-dental", "bolt-plumbing"]
    assert listed.json()[0]["numbers"] == [TEST_NUMBER]  # the refused update changed nothing


async def test_a_number_of_another_business_is_a_conflict(tenants: Tenants) -> None:
    async with tenants.client(ADMIN_TOKEN) as http:
        response = await http.patch("/api/v1/businesses/acme-dental",
                                    json={"numbers": [OTHER_NUMBER]})
        null = await http.patch("/api/v1/businesses/acme-dental", json={"greeting": None})
        null_part = await http.patch("/api/v1/businesses/acme-dental",
                                     json={"prompt": {"tone": "calm", "role": None}})
    assert response.status_code == 409 and "bolt-plumbing" in response.text
    assert null.status_code == 422 and null.json()["detail"][0]["loc"] == ["body", "greeting"]
    assert null_part.status_code == 422, null_part.text  # was a 500
    assert null_part.json()["detail"] == [{"loc": ["body", "prompt", "role"],
                                           "msg": "may not be null", "type": "value_error"}]


async def test_a_business_key_is_not_told_whose_number_it_asked_for(tenants: Tenants) -> None:
    async with tenants.client(tenants.acme) as http:
        response = await http.patch("/api/v1/businesses/acme-dental",
                                    json={"numbers": [TEST_NUMBER, OTHER_NUMBER]})
    assert response.status_code == 409, response.text
    assert response.json() == {"detail": f"{OTHER_NUMBER} already belongs to another business"}
    assert "bolt" not in response.text


async def test_a_patched_greeting_is_what_the_next_call_says(tenants: Tenants) -> None:
    stack = tenants.stack
    services = stack.services
    greeting = "Acme Dental, freshly patched greeting, hello!"
    async with tenants.client(tenants.acme) as http:
        response = await http.patch("/api/v1/businesses/acme-dental",
                                    json={"greeting": greeting})
    assert response.status_code == 200, response.text
    # The config cache's listener renders the new greeting's audio (no restart, no poll).
    business = services.config.business("acme-dental")
    assert business is not None and business.greeting == greeting
    await services.greetings.wait_ready([business], timeout_s=30)
    assert services.greetings.has(services.greetings.key(greeting, business.voice))

    result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER, script=LISTEN_THEN_HANG_UP)
    record = await services.final_record(result.call_sid, timeout_s=20)
    agent_turns = [t for t in record.transcript if t.speaker == "agent"]
    assert agent_turns and agent_turns[0].text == greeting
    assert result.played_ms > 0


async def test_openapi_describes_the_business_models(tenants: Tenants) -> None:
    async with httpx.AsyncClient(base_url=tenants.stack.server.url, trust_env=False) as http:
        schema = (await http.get("/api/openapi.json")).json()
    create = schema["components"]["schemas"]["BusinessCreate"]
    assert create["additionalProperties"] is False
    assert {"slug", "numbers", "prompt", "hours", "dtmf", "http_tools"} <= create[
        "properties"].keys()


async def test_deleting_a_business_keeps_its_calls_and_ends_its_keys(tenants: Tenants) -> None:
    async with tenants.client(ADMIN_TOKEN) as http:
        deleted = await http.delete("/api/v1/businesses/acme-dental")
        call = await http.get("/api/calls/CAacme")
        listed = await http.get("/api/v1/businesses")
    async with tenants.client(tenants.acme) as http:
        with_old_key = await http.get("/api/v1/businesses/acme-dental")
    assert deleted.status_code == 204, deleted.text
    assert call.status_code == 200 and call.json()["call_sid"] == "CAacme"
    assert [b["slug"] for b in listed.json()] == ["bolt-plumbing"]
    assert with_old_key.status_code == 401  # its key went with it
    assert tenants.stack.services.config.business_for_number(TEST_NUMBER) is None
