"""The owner's /api/v1 routes over real HTTP: templates, placing a call, the calls search and
one call, messages with their handled state, and a business's stats. Each with its happy
path, its validation errors (422 naming the field) and tenant isolation (a business key
gets 404 for anything of the other tenant, and nothing of it changes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hotline.core.outcomes import Outcome
from hotline.core.record import CallRecord, TimelineStage, TranscriptTurn
from hotline.sim.engine import ScriptedToolCall
from hotline.sim.script import CallScript, Hangup
from tests import test_api_keys
from tests.factories import TEST_NUMBER
from tests.test_api_keys import ADMIN_TOKEN, CALLEE, OTHER_NUMBER, Tenants
from tests.test_e2e_call_control import ask
from tests.test_store_queries import set_recording

pytestmark = pytest.mark.sockets
tenants = test_api_keys.tenants  # two businesses, a key each, a call with a message each

CALLER = "+15550001111"
T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)  # after the fixture's calls


def errors(response: Any) -> dict[tuple[Any, ...], str]:
    assert response.status_code == 422, response.text
    return {tuple(e["loc"]): e["msg"] for e in response.json()["detail"]}


# -- templates ---------------------------------------------------------------------------------
async def test_templates_are_created_read_updated_and_deleted(tenants: Tenants) -> None:
    services = tenants.stack.services
    base = "/api/v1/businesses/acme-dental/templates"
    body = {"name": "recall", "greeting": "Hi {first_name}, time for your {what}.",
            "instructions": "Offer {first_name} a slot.", "voicemail": "Please call back, "
            "{first_name}.", "greeting_timing": "after_amd"}
    async with tenants.client(tenants.acme) as http:
        listed = await http.get(base)
        created = await http.post(base, json=body)
        again = await http.post(base, json=body)
        read = await http.get(f"{base}/recall")
        cached = services.config.business("acme-dental")
        patched = await http.patch(f"{base}/recall", json={"greeting": "Hello {first_name}!",
                                                           "greeting_timing": None})
        deleted = await http.delete(f"{base}/recall")
        gone = await http.get(f"{base}/recall")
        deleted_again = await http.delete(f"{base}/recall")
    assert [t["name"] for t in listed.json()] == ["reminder"]
    assert created.status_code == 201, created.text
    assert created.json() == {**body, "placeholders": ["first_name", "what"]}
    assert again.status_code == 409
    assert read.json() == created.json()
    # The config cache had it at once: a call placed now may use it.
    assert cached is not None and [t.name for t in cached.templates] == ["recall", "reminder"]
    assert patched.status_code == 200, patched.text
    assert patched.json()["greeting"] == "Hello {first_name}!"
    assert patched.json()["greeting_timing"] is None
    assert patched.json()["instructions"] == body["instructions"]  # kept
    assert patched.json()["placeholders"] == ["first_name"]
    assert deleted.status_code == 204
    assert gone.status_code == 404 and deleted_again.status_code == 404
    after = services.config.business("acme-dental")
    assert after is not None and [t.name for t in after.templates] == ["reminder"]


BAD_TEMPLATES: list[tuple[dict[str, Any], tuple[Any, ...], str]] = [
    ({"name": "x", "greeting": "Hi", "colour": "red"}, ("body", "colour"), "Extra inputs"),
    ({"name": "no spaces", "greeting": "Hi"}, ("body", "name"), "letters, digits"),
    ({"name": "x", "greeting": "  "}, ("body", "greeting"), "must not be empty"),
    ({"name": "x", "greeting": "Hi {0}"}, ("body", "greeting"), "must be a name"),
    ({"name": "x", "greeting": "Hi {name"}, ("body", "greeting"), "expected '}'"),
    ({"name": "x", "greeting": "Hi", "voicemail": "Bye {}"}, ("body", "voicemail"),
     "must be a name"),
    ({"name": "x", "greeting": "Hi", "greeting_timing": "later"}, ("body", "greeting_timing"),
     "Input should be"),
]


async def test_an_invalid_template_answers_422_naming_the_field(tenants: Tenants) -> None:
    base = "/api/v1/businesses/acme-dental/templates"
    async with tenants.client(ADMIN_TOKEN) as http:
        for body, loc, reason in BAD_TEMPLATES:  # one server for all: each a fresh request
            created = await http.post(base, json=body)
            assert reason in errors(created)[loc], body
            if loc != ("body", "name"):  # the same rule, the same answer on an update
                patch = {k: v for k, v in body.items() if k != "name"}
                patched = await http.patch(f"{base}/reminder", json=patch)
                assert reason in errors(patched)[loc], body
        listed = await http.get(base)
    assert [(t["name"], t["greeting"]) for t in listed.json()] == [
        ("reminder", "Hi {name}, this is Acme Dental calling.")]  # nothing changed


async def test_another_tenants_templates_answer_404(tenants: Tenants) -> None:
    base = "/api/v1/businesses/bolt-plumbing/templates"
    async with tenants.client(tenants.acme) as http:
        answers = [
            await http.get(base),
            await http.post(base, json={"name": "x", "greeting": "Hi"}),
            await http.get(f"{base}/reminder"),
            await http.patch(f"{base}/reminder", json={"greeting": "hijacked"}),
            await http.delete(f"{base}/reminder"),
        ]
    for response in answers:
        assert response.status_code == 404, response.text
        assert response.json() == {"detail": "no business bolt-plumbing"}
    bolt = tenants.stack.services.config.business("bolt-plumbing")
    assert bolt is not None
    assert [(t.name, t.greeting_template) for t in bolt.templates] == [
        ("reminder", "Hi {name}, this is Acme Dental calling.")]


# -- placing a call ------------------------------------------------------------------------------
def place(business: str = "acme-dental", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"business": business, "to": CALLEE, "template": "reminder",
                            "variables": {"name": "Dana"}}
    body.update(changes)
    return body


async def test_a_call_is_placed_then_read_back(tenants: Tenants) -> None:
    stack = tenants.stack
    stack.twilio.callee_scripts[CALLEE] = CallScript([Hangup()])
    async with tenants.client(tenants.acme) as http:
        placed = await http.post("/api/v1/calls", json=place(**{"from": TEST_NUMBER}))
        assert placed.status_code == 201, placed.text
        sid = placed.json()["call_sid"]
        await stack.twilio.wait_for_call(sid, timeout=30)
        await stack.services.recorder.flush(10)
        read = await http.get(f"/api/v1/calls/{sid}")
        listed = await http.get("/api/v1/calls", params={"direction": "outbound"})
    assert placed.json() == {"call_sid": sid, "status": placed.json()["status"],
                             "business": "acme-dental", "to": CALLEE, "from": TEST_NUMBER}
    assert [c["call_sid"] for c in listed.json()["calls"]] == [sid]
    call = read.json()
    assert (call["direction"], call["template"], call["variables"]) == (
        "outbound", "reminder", {"name": "Dana"})
    assert (call["from"], call["to"], call["business"]) == (TEST_NUMBER, CALLEE, "acme-dental")


BAD_PLACINGS: list[tuple[dict[str, Any], tuple[Any, ...], str]] = [
    (place(variables={}), ("body", "variables"), "no variable fills: name"),
    (place(variables={"first": "Dana"}), ("body", "variables"), "name"),
    (place(to="0501234567"), ("body", "to"), "not an E.164"),
    (place(**{"from": "+1"}), ("body", "from"), "not an E.164"),
    (place(template="nope"), ("body", "template"), "no template 'nope' (known: reminder)"),
    (place(priority="high"), ("body", "priority"), "Extra inputs"),
    (place(variables={"name": 7}), ("body", "variables", "name"), "valid string"),
]


async def test_a_call_that_cannot_be_placed_answers_422(tenants: Tenants) -> None:
    async with tenants.client(tenants.acme) as http:
        for body, loc, reason in BAD_PLACINGS:
            response = await http.post("/api/v1/calls", json=body)
            assert reason in errors(response)[loc], body
    assert tenants.stack.twilio.created == []  # nothing was dialled


async def test_a_business_key_cannot_place_a_call_for_another_tenant(tenants: Tenants) -> None:
    async with tenants.client(tenants.acme) as http:
        other = await http.post("/api/v1/calls", json=place("bolt-plumbing"))
        unknown = await http.post("/api/v1/calls", json=place("nobody"))
        # Its own business, but with another tenant's number as the caller id.
        spoofed = await http.post("/api/v1/calls", json=place(**{"from": OTHER_NUMBER}))
    assert other.status_code == 404 and other.json() == {"detail": "no business bolt-plumbing"}
    assert errors(spoofed) == {("body", "from"): "must be one of business acme-dental's "
                                                 f"numbers: {TEST_NUMBER}"}
    assert unknown.status_code == 404
    assert tenants.stack.twilio.created == []


# -- reading calls --------------------------------------------------------------------------------
async def test_a_real_call_reads_back_with_its_tool_calls_and_recording(
        tenants: Tenants) -> None:
    stack = tenants.stack
    async with tenants.client(tenants.acme) as http:  # the owner turns recording on
        turned_on = await http.patch("/api/v1/businesses/acme-dental",
                                     json={"recording": True})
    assert turned_on.status_code == 200, turned_on.text
    stack.engine.tool_script = [ScriptedToolCall(1, "take_message", {
        "name": "Dana", "phone": CALLER, "message": "Call me back about Monday"})]
    result = await stack.phone.call(to=TEST_NUMBER, from_=CALLER,
                                    script=ask("Are you open on Monday?"))
    await stack.services.final_record(result.call_sid, timeout_s=30)
    async with tenants.client(tenants.acme) as http:
        read = await http.get(f"/api/v1/calls/{result.call_sid}")
        said = read.json()["transcript"][0]["text"]  # the greeting, as far as it was heard
        found = await http.get("/api/v1/calls", params={"q": said[3:14].upper()})
        not_found = await http.get("/api/v1/calls", params={"q": "closed on sunday"})
        recording = read.json()["recording"]
        wav = await http.get(recording["url"])
    async with tenants.client(tenants.bolt) as http:
        other = await http.get(f"/api/v1/calls/{result.call_sid}")
        other_search = await http.get("/api/v1/calls", params={"q": said[3:14]})
        other_wav = await http.get(recording["url"])
    call = read.json()
    assert read.status_code == 200, read.text
    assert call["business"] == "acme-dental" and call["outcome"] == "completed"
    assert [t["speaker"] for t in call["transcript"]][:2] == ["agent", "caller"]
    assert {"stream_start", "first_audio_to_caller", "tool_called", "tool_done"} <= {
        s["stage"] for s in call["timeline"]}
    [tool] = call["tool_calls"]
    assert tool["error"] is False
    assert tool["name"] == "take_message" and "about Monday" in tool["arguments"]
    assert tool["result"] == '{"ok":true,"saved":true}'  # the answer, as the model got it
    assert call["greeting_path"] in ("cached", "warm", "cold") and call["greeting_ms"] >= 0
    # The recording is listed with the call and downloads with the caller's key.
    assert recording["url"] == f"/api/v1/calls/{result.call_sid}/recording"
    assert recording["ms"] > 0 and recording["deleted_at"] is None
    assert wav.status_code == 200 and wav.content.startswith(b"RIFF")
    assert [c["call_sid"] for c in found.json()["calls"]] == [result.call_sid]
    assert found.json()["calls"][0]["recording"] == recording
    assert not_found.json()["calls"] == []
    assert other.status_code == 404 and other.json() == {
        "detail": f"no call {result.call_sid}"}
    assert other_search.json() == {"calls": [], "next_cursor": None}
    assert other_wav.status_code == 404 and not other_wav.content.startswith(b"RIFF")


async def test_a_deleted_recording_is_listed_without_a_url(tenants: Tenants) -> None:
    deleted = T0 + timedelta(days=30)
    await set_recording(tenants.stack.services.store, "CAacme", None, 4200, deleted)
    async with tenants.client(tenants.acme) as http:
        read = await http.get("/api/v1/calls/CAacme")
    assert read.json()["recording"] == {"url": None, "ms": 4200,
                                        "deleted_at": "2026-05-01T09:00:00Z"}


def stored_call(sid: str, business: str, minutes: int, **changes: Any) -> CallRecord:
    values: dict[str, Any] = {
        "call_sid": sid, "business_slug": business, "direction": "inbound",
        "from_number": CALLER, "to_number": TEST_NUMBER, "status": "completed",
        "outcome": Outcome.COMPLETED, "started_at": T0 + timedelta(minutes=minutes),
        "ended_at": T0 + timedelta(minutes=minutes, seconds=40),
        "transcript": [TranscriptTurn("caller", f"call {sid} about teeth", 100, 900)],
        "timeline": [TimelineStage("stream_start", 10.0)],
    }
    values.update(changes)
    return CallRecord(**values)


async def test_the_calls_list_filters_and_pages_within_the_tenant(tenants: Tenants) -> None:
    store = tenants.stack.services.store
    for n in range(5):
        await store.save_call(stored_call(f"CAa{n}", "acme-dental", 10 + n))
    await store.save_call(stored_call("CAb0", "bolt-plumbing", 12,
                                      outcome=Outcome.TRANSFERRED))
    async with tenants.client(tenants.acme) as http:
        pages, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 2, "from": "2026-04-01T09:10:00Z"}
            if cursor is not None:
                params["cursor"] = cursor
            page = (await http.get("/api/v1/calls", params=params)).json()
            pages.append([c["call_sid"] for c in page["calls"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        ranged = await http.get("/api/v1/calls", params={
            "from": "2026-04-01T12:11:00+03:00", "to": "2026-04-01T09:13:00"})
        other = await http.get("/api/v1/calls", params={"business": "bolt-plumbing"})
        transferred = await http.get("/api/v1/calls", params={"outcome": "transferred"})
        bad = [await http.get("/api/v1/calls", params=p) for p in (
            {"cursor": "garbage"}, {"limit": 0}, {"limit": 201}, {"outcome": "happy"},
            {"direction": "sideways"}, {"from": "yesterday"}, {"q": "x" * 201})]
    async with tenants.client(ADMIN_TOKEN) as http:
        admin = await http.get("/api/v1/calls", params={"outcome": "transferred"})
        admin_bolt = await http.get("/api/v1/calls", params={"business": "bolt-plumbing",
                                                             "q": "TEETH"})
    assert pages == [["CAa4", "CAa3"], ["CAa2", "CAa1"], ["CAa0"]]
    assert [c["call_sid"] for c in ranged.json()["calls"]] == ["CAa2", "CAa1"]
    assert other.json() == {"calls": [], "next_cursor": None}
    assert transferred.json()["calls"] == []
    wanted = [("query", "cursor"), ("query", "limit"), ("query", "limit"), ("query", "outcome"),
              ("query", "direction"), ("query", "from"), ("query", "q")]
    for response, loc in zip(bad, wanted, strict=True):
        assert loc in errors(response), response.text
    assert [c["call_sid"] for c in admin.json()["calls"]] == ["CAb0"]
    assert [c["call_sid"] for c in admin_bolt.json()["calls"]] == ["CAb0"]
    summary = admin.json()["calls"][0]
    assert summary["duration_s"] == 40.0 and summary["recording"] is None
    assert summary["greeting_path"] is None and summary["business"] == "bolt-plumbing"


# -- messages ------------------------------------------------------------------------------------
async def test_messages_are_marked_handled_within_the_tenant(tenants: Tenants) -> None:
    async with tenants.client(tenants.acme) as http:
        todo = await http.get("/api/v1/messages", params={"handled": False})
        marked = await http.patch("/api/v1/messages/CAacme-1", json={"handled": True})
        handled = await http.get("/api/v1/messages", params={"handled": "true"})
        todo_after = await http.get("/api/v1/messages", params={"handled": "false"})
        other = await http.patch("/api/v1/messages/CAbolt-1", json={"handled": True})
        missing = await http.patch("/api/v1/messages/CAnone-1", json={"handled": True})
        other_list = await http.get("/api/v1/messages", params={"business": "bolt-plumbing"})
        bad = [await http.patch("/api/v1/messages/CAacme-1", json=body)
               for body in ({"handled": True, "note": "x"}, {}, {"handled": "maybe"})]
        unmarked = await http.patch("/api/v1/messages/CAacme-1", json={"handled": False})
    async with tenants.client(ADMIN_TOKEN) as http:
        everything = await http.get("/api/v1/messages")
    assert [m["id"] for m in todo.json()] == ["CAacme-1"]
    message = marked.json()
    assert marked.status_code == 200 and message["handled"] is True
    assert message["handled_at"] is not None and message["business"] == "acme-dental"
    assert message["audio_url"] == "/api/messages/CAacme-1/audio"
    assert [m["id"] for m in handled.json()] == ["CAacme-1"]
    assert todo_after.json() == []
    for response in (other, missing):
        assert response.status_code == 404, response.text
    assert other.json() == {"detail": "no message CAbolt-1"}
    assert other_list.json() == []
    assert errors(bad[0]) == {("body", "note"): "Extra inputs are not permitted"}
    assert ("body", "handled") in errors(bad[1]) and ("body", "handled") in errors(bad[2])
    assert unmarked.json()["handled"] is False and unmarked.json()["handled_at"] is None
    # The other tenant's message was left as it was.
    assert {m["id"]: m["handled"] for m in everything.json()} == {"CAacme-1": False,
                                                                  "CAbolt-1": False}


# -- stats ---------------------------------------------------------------------------------------
async def test_stats_of_a_business_and_not_of_another(tenants: Tenants) -> None:
    store = tenants.stack.services.store
    cached = [TimelineStage("stream_start", 10.0),
              TimelineStage("greeting_requested", 10.0, "cached audio 2000 ms"),
              TimelineStage("first_audio_to_caller", 14.0)]
    for n in range(3):
        await store.save_call(stored_call(f"CAs{n}", "acme-dental", 24 * 60 * n,
                                          timeline=cached))
    await store.save_call(stored_call("CAsb", "bolt-plumbing", 0, timeline=cached))
    window = {"from": "2026-04-01", "to": "2026-04-03"}
    async with tenants.client(tenants.acme) as http:
        stats = await http.get("/api/v1/businesses/acme-dental/stats", params=window)
        default = await http.get("/api/v1/businesses/acme-dental/stats")
        other = await http.get("/api/v1/businesses/bolt-plumbing/stats", params=window)
        bad = [await http.get("/api/v1/businesses/acme-dental/stats", params=p) for p in (
            {"from": "2026-04-03", "to": "2026-04-01"}, {"from": "2024-01-01", "to": "2026-01-01"},
            {"from": "soon"}, {"from": "0001-01-01T00:00:00Z", "to": "0001-01-02T00:00:00Z"})]
    body = stats.json()
    assert stats.status_code == 200, stats.text
    assert (body["business"], body["timezone"], body["calls"]) == ("acme-dental", "UTC", 2)
    assert body["from"] == "2026-04-01T00:00:00Z" and body["to"] == "2026-04-03T00:00:00Z"
    assert body["per_day"] == [{"date": "2026-04-01", "calls": 1},
                               {"date": "2026-04-02", "calls": 1}]
    assert body["outcomes"] == {"completed": 2}
    assert body["greeting"][0] == {"path": "cached", "calls": 2, "p50_ms": 4.0, "p95_ms": 4.0}
    assert [g["path"] for g in body["greeting"]] == ["cached", "warm", "cold"]
    assert body["average_duration_s"] == 40.0
    assert default.status_code == 200 and len(default.json()["per_day"]) in (30, 31)
    assert other.status_code == 404 and other.json() == {"detail": "no business bolt-plumbing"}
    assert ("query", "to") in errors(bad[0])
    assert ("query", "from") in errors(bad[1])
    assert ("query", "from") in errors(bad[2])
    assert "outside the years" in errors(bad[3])["query", "from"]
    assert OTHER_NUMBER not in other.text


# -- what the database cannot keep -------------------------------------------------------------
async def test_a_nul_character_anywhere_is_a_422_not_a_failed_query(tenants: Tenants) -> None:
    # PostgreSQL's text takes no NUL: it must be refused before any query or write.
    async with tenants.client(ADMIN_TOKEN) as http:
        answers = {
            ("query", "q"): await http.get("/api/v1/calls", params={"q": "a\x00b"}),
            ("query", "business"): await http.get("/api/messages",
                                                  params={"business": "\x00"}),
            ("path", "call_sid"): await http.get("/api/v1/calls/CA%00x"),
            ("path", "slug"): await http.get("/api/v1/businesses/acme%00/stats"),
            ("body", "greeting"): await http.patch("/api/v1/businesses/acme-dental",
                                                   json={"greeting": "Hi\x00"}),
            ("body", "variables"): await http.post("/api/v1/calls", json=place(
                variables={"name": "D\x00na"})),
            ("body", "handled"): await http.patch("/api/v1/messages/CAacme-1", json={}),
        }
        business = (await http.get("/api/v1/businesses/acme-dental")).json()
    for loc, response in answers.items():
        assert loc in errors(response), (loc, response.text)
    assert "must not contain NUL" in errors(answers["query", "q"])["query", "q"]
    assert business["greeting"] == "Hi, Acme Dental, how can I help?"
    assert tenants.stack.twilio.created == []
