"""The tool runtime: definitions, built-ins, argument checks, signing and HTTP tools.

Built-ins run through `Toolbox.run` with fixed clocks; HTTP tools call a real Starlette app
on uvicorn (an ephemeral port) that verifies each request's signature, as a business would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from hotline.business import BUILTIN_TOOLS, HttpTool
from hotline.hours import check_timezone, hours_answer, parse_day, parse_week
from hotline.local_server import LocalServer
from hotline.plan import CallPlan
from hotline.tools import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Toolbox,
    ToolEffect,
    ToolOutcome,
    sign_tool_request,
    tool_definitions,
    tool_error,
    verify_tool_signature,
)
from hotline.tools.builtin import BUILTINS, MAX_MESSAGE_CHARS, MAX_NAME_CHARS, BuiltinCall
from hotline.tools.http import MAX_REPLY_BYTES
from tests.factories import make_plan

SECRET = "whsec_test_0123456789"
ALL_BUILTINS = tuple(BUILTIN_TOOLS)
JERUSALEM = "Asia/Jerusalem"
# Sun-Thu split day, short Friday, Saturday closed.
CLINIC_HOURS = (("sun", "08:00-13:00, 16:00-19:00"), ("mon", "08:00-13:00, 16:00-19:00"),
                ("tue", "08:00-13:00, 16:00-19:00"), ("wed", "08:00-13:00, 16:00-19:00"),
                ("thu", "08:00-13:00, 16:00-19:00"), ("fri", "08:00-12:00"))
PERSONAL = "Yael Cohen 054-1234567"  # must never reach a log line


def fixed_clock(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def jerusalem(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=check_timezone(JERUSALEM))


def args(**values: Any) -> str:
    return orjson.dumps(values).decode()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def toolbox(http: httpx.AsyncClient, plan: CallPlan | None = None, *,
            secret: str | None = SECRET, clock: Callable[[], datetime] | None = None) -> Toolbox:
    plan = plan or make_plan(tools=ALL_BUILTINS, transfer_number="+15550009999")
    if clock is None:
        return Toolbox(plan, http, signing_secret=secret)
    return Toolbox(plan, http, signing_secret=secret, clock=clock)


def assert_error(outcome: ToolOutcome, tool: str, *fragments: str) -> None:
    assert outcome.error is True
    assert outcome.effect is ToolEffect.NONE
    assert outcome.message is None
    assert outcome.output["tool"] == tool
    assert set(outcome.output) == {"error", "tool"}
    for fragment in fragments:
        assert fragment in outcome.output["error"]


# -- definitions --------------------------------------------------------------------------
LOOKUP = HttpTool("lookup_booking", "Find a booking by the caller's phone number.",
                  "http://127.0.0.1:9/unused",
                  {"type": "object", "properties": {"phone": {"type": "string"}},
                   "required": ["phone"]})


HOURS = (("mon", "09:00-17:00"),)


class TestDefinitions:
    def test_default_business_offers_its_default_tools(self) -> None:
        names = [d["name"] for d in tool_definitions(make_plan(opening_hours=HOURS))]
        assert names == ["end_call", "take_message", "check_hours"]

    def test_check_hours_is_offered_only_with_opening_hours(self) -> None:
        names = [d["name"] for d in tool_definitions(make_plan())]
        assert names == ["end_call", "take_message"]

    def test_transfer_is_offered_only_with_a_transfer_number(self) -> None:
        without = make_plan(tools=ALL_BUILTINS, transfer_number=None, opening_hours=HOURS)
        with_number = make_plan(tools=ALL_BUILTINS, transfer_number="+15550009999",
                                opening_hours=HOURS)
        assert "transfer_to_human" not in [d["name"] for d in tool_definitions(without)]
        assert [d["name"] for d in tool_definitions(with_number)] == list(BUILTIN_TOOLS)

    def test_order_follows_builtin_tools_then_http_tools(self) -> None:
        plan = make_plan(tools=("check_hours", "end_call", "no_such_builtin"),
                         http_tools=(LOOKUP,), opening_hours=HOURS)
        assert [d["name"] for d in tool_definitions(plan)] == [
            "end_call", "check_hours", "lookup_booking"]

    def test_http_tool_cannot_shadow_a_builtin(self) -> None:
        shadow = dataclasses.replace(LOOKUP, name="end_call", description="evil")
        plan = make_plan(tools=("end_call",), http_tools=(shadow, LOOKUP, LOOKUP))
        definitions = tool_definitions(plan)
        assert [d["name"] for d in definitions] == ["end_call", "lookup_booking"]
        assert definitions[0]["description"] == BUILTINS["end_call"].description

    def test_shape_is_the_realtime_ga_function_tool(self) -> None:
        plan = make_plan(tools=ALL_BUILTINS, transfer_number="+15550009999",
                         opening_hours=HOURS,
                         http_tools=(LOOKUP, dataclasses.replace(LOOKUP, name="bare",
                                                                 parameters={})))
        definitions = tool_definitions(plan)
        assert len(definitions) == 6
        for definition in definitions:
            assert set(definition) == {"type", "name", "description", "parameters"}
            assert definition["type"] == "function"
            assert definition["description"].strip()
            parameters = definition["parameters"]
            assert parameters["type"] == "object"
            assert isinstance(parameters["properties"], dict)
            assert set(parameters["required"]) <= set(parameters["properties"])
        # The whole list goes into session.update as JSON.
        assert orjson.loads(orjson.dumps(definitions)) == definitions
        by_name = {d["name"]: d for d in definitions}
        assert by_name["take_message"]["parameters"]["required"] == ["name", "phone", "message"]
        assert by_name["check_hours"]["parameters"]["required"] == []
        assert by_name["bare"]["parameters"] == {"type": "object", "properties": {},
                                                 "required": []}

    def test_deterministic_and_detached_from_the_plan(self) -> None:
        plan = make_plan(tools=ALL_BUILTINS, http_tools=(LOOKUP,))
        first = tool_definitions(plan)
        first[-1]["parameters"]["required"].append("tampered")
        first[0]["parameters"]["required"].clear()
        assert tool_definitions(plan) != first
        assert tool_definitions(plan) == tool_definitions(plan)
        assert LOOKUP.parameters["required"] == ["phone"]


# -- built-ins ----------------------------------------------------------------------------
class TestEndCall:
    async def test_ends_the_call_after_a_goodbye(self, http: httpx.AsyncClient) -> None:
        outcome = await toolbox(http).run("end_call", args(reason="caller said bye"),
                                          taken_ms=1200)
        assert outcome == ToolOutcome(
            output={"ok": True,
                    "next": "Say a short, warm goodbye now. The call ends when you finish."},
            effect=ToolEffect.END_CALL)
        assert outcome.output_json() == (
            '{"ok":true,"next":"Say a short, warm goodbye now. The call ends when you finish."}')

    async def test_reason_is_required_and_a_string(self, http: httpx.AsyncClient) -> None:
        box = toolbox(http)
        assert_error(await box.run("end_call", "{}", taken_ms=0), "end_call",
                     "missing required argument 'reason'")
        assert_error(await box.run("end_call", args(reason=3), taken_ms=0), "end_call",
                     "'reason'", "string")

    async def test_not_enabled(self, http: httpx.AsyncClient) -> None:
        plan = make_plan(tools=("take_message",))
        assert_error(await toolbox(http, plan).run("end_call", args(reason="x"), taken_ms=0),
                     "end_call", "no such tool")


class TestTransfer:
    async def test_transfers_with_a_number(self, http: httpx.AsyncClient) -> None:
        outcome = await toolbox(http).run("transfer_to_human", args(reason="billing"),
                                          taken_ms=0)
        assert outcome.effect is ToolEffect.TRANSFER
        assert outcome.error is False
        assert outcome.output == {"ok": True, "next": "Tell the caller in one short sentence "
                                  "that you are connecting them to a person now."}

    async def test_no_number_is_an_error(self, http: httpx.AsyncClient) -> None:
        plan = make_plan(tools=ALL_BUILTINS, transfer_number=None)
        outcome = await toolbox(http, plan).run("transfer_to_human", args(reason="x"),
                                                taken_ms=0)
        assert_error(outcome, "transfer_to_human")

    def test_handler_refuses_without_a_number(self) -> None:
        call = BuiltinCall(plan=make_plan(transfer_number=None), arguments={"reason": "x"},
                           taken_ms=0, now=datetime.now(UTC))
        assert_error(BUILTINS["transfer_to_human"].run(call), "transfer_to_human",
                     "take a message")


class TestTakeMessage:
    async def test_saves_a_trimmed_message(self, http: httpx.AsyncClient) -> None:
        outcome = await toolbox(http).run(
            "take_message",
            args(name="  Dana Levi ", phone=" 054-1234567 ", message="  Call me back  "),
            taken_ms=4321)
        assert outcome.output == {"ok": True, "saved": True}
        assert outcome.effect is ToolEffect.NONE and outcome.error is False
        assert outcome.message is not None
        assert (outcome.message.name, outcome.message.phone, outcome.message.message,
                outcome.message.taken_ms) == ("Dana Levi", "054-1234567", "Call me back", 4321)

    async def test_name_and_phone_may_be_empty(self, http: httpx.AsyncClient) -> None:
        outcome = await toolbox(http).run("take_message",
                                          args(name="", phone="", message="Is Dr. Katz in?"),
                                          taken_ms=0)
        assert outcome.message is not None
        assert (outcome.message.name, outcome.message.phone) == ("", "")

    async def test_lengths_are_capped(self, http: httpx.AsyncClient) -> None:
        outcome = await toolbox(http).run(
            "take_message", args(name="n" * 1000, phone="5" * 1000, message="m" * 10_000),
            taken_ms=0)
        assert outcome.message is not None
        assert len(outcome.message.name) == MAX_NAME_CHARS
        assert 0 < len(outcome.message.phone) < 100
        assert len(outcome.message.message) == MAX_MESSAGE_CHARS

    @pytest.mark.parametrize("arguments, fragment", [
        (args(name="Dana", phone="1", message="   "), "empty"),
        (args(name="Dana", phone="1"), "missing required argument 'message'"),
        (args(phone="1", message="hi"), "missing required argument 'name'"),
        (args(name=None, phone="1", message="hi"), "'name'"),
        (args(name="Dana", phone=5551234, message="hi"), "'phone'"),
        (args(name="Dana", phone="1", message=["hi"]), "'message'"),
    ])
    async def test_bad_arguments(self, http: httpx.AsyncClient, arguments: str,
                                 fragment: str) -> None:
        outcome = await toolbox(http).run("take_message", arguments, taken_ms=0)
        assert_error(outcome, "take_message", fragment)

    async def test_argument_values_never_reach_the_log(
            self, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)
        box = toolbox(http)
        await box.run("take_message", args(name=PERSONAL, phone=7, message=PERSONAL),
                      taken_ms=0)
        await box.run("take_message", '{"name": "' + PERSONAL + '", broken', taken_ms=0)
        assert caplog.records and all(r.levelno == logging.WARNING for r in caplog.records)
        assert PERSONAL not in caplog.text
        assert make_plan().call_sid in caplog.text  # the call is named on each line


class TestArguments:
    @pytest.mark.parametrize("arguments, fragment", [
        ("{not json", "not valid JSON"),
        ('["a"]', "must be a JSON object"),
        ('"text"', "must be a JSON object"),
        ("null", "must be a JSON object"),
        ("{" + '"a":1,' * 10_000 + '"b":2}', "longer than"),
    ])
    async def test_bad_json(self, http: httpx.AsyncClient, arguments: str,
                            fragment: str) -> None:
        assert_error(await toolbox(http).run("end_call", arguments, taken_ms=0), "end_call",
                     fragment)

    async def test_blank_arguments_mean_none(self, http: httpx.AsyncClient) -> None:
        plan = make_plan(tools=ALL_BUILTINS, opening_hours=CLINIC_HOURS, timezone=JERUSALEM)
        box = toolbox(http, plan, clock=fixed_clock(jerusalem(2025, 7, 6, 10)))
        for blank in ("", "  ", "{}"):
            assert (await box.run("check_hours", blank, taken_ms=0)).error is False

    async def test_unknown_tool(self, http: httpx.AsyncClient) -> None:
        assert_error(await toolbox(http).run("launch_rockets", "{}", taken_ms=0),
                     "launch_rockets", "no such tool")

    async def test_extra_arguments_are_ignored(self, http: httpx.AsyncClient) -> None:
        outcome = await toolbox(http).run("end_call", args(reason="done", mood="happy"),
                                          taken_ms=0)
        assert outcome.effect is ToolEffect.END_CALL


# -- check_hours --------------------------------------------------------------------------
def hours_plan(hours: tuple[tuple[str, str], ...] = CLINIC_HOURS) -> CallPlan:
    return make_plan(tools=("check_hours",), opening_hours=hours, timezone=JERUSALEM)


class TestCheckHours:
    async def hours(self, http: httpx.AsyncClient, now: datetime,
                    plan: CallPlan | None = None) -> ToolOutcome:
        box = toolbox(http, plan or hours_plan(), clock=fixed_clock(now))
        return await box.run("check_hours", "{}", taken_ms=0)

    async def test_open_in_the_morning(self, http: httpx.AsyncClient) -> None:
        outcome = await self.hours(http, jerusalem(2025, 7, 6, 10, 15))  # a Sunday
        assert outcome.error is False
        assert outcome.output["open_now"] is True
        assert outcome.output["closes_at"] == "13:00"
        assert outcome.output["local_time"] == "Sunday 10:15"
        assert outcome.output["timezone"] == JERUSALEM
        assert outcome.output["week"]["Saturday"] == "closed"
        assert outcome.output["week"]["Sunday"] == "08:00-13:00, 16:00-19:00"

    async def test_closed_at_midday_opens_again_the_same_day(
            self, http: httpx.AsyncClient) -> None:
        outcome = await self.hours(http, jerusalem(2025, 7, 6, 14, 30))
        assert outcome.output["open_now"] is False
        assert outcome.output["next_opening"] == "Sunday 16:00"
        assert outcome.output["next_opening_date"] == "2025-07-06"

    async def test_closing_minute_is_closed(self, http: httpx.AsyncClient) -> None:
        outcome = await self.hours(http, jerusalem(2025, 7, 6, 19, 0))
        assert outcome.output["open_now"] is False
        assert outcome.output["next_opening"] == "Monday 08:00"

    async def test_friday_afternoon_opens_on_sunday(self, http: httpx.AsyncClient) -> None:
        outcome = await self.hours(http, jerusalem(2025, 7, 4, 15, 0))  # a Friday
        assert outcome.output["open_now"] is False
        assert outcome.output["next_opening"] == "Sunday 08:00"
        assert outcome.output["next_opening_date"] == "2025-07-06"

    async def test_saturday_before_opening_time(self, http: httpx.AsyncClient) -> None:
        outcome = await self.hours(http, jerusalem(2025, 7, 5, 7, 0))
        assert outcome.output["next_opening"] == "Sunday 08:00"

    @pytest.mark.parametrize("utc_moment, local_time, open_now", [
        (datetime(2025, 7, 6, 5, 30, tzinfo=UTC), "Sunday 08:30", True),    # IDT, UTC+3
        (datetime(2025, 1, 5, 5, 30, tzinfo=UTC), "Sunday 07:30", False),   # IST, UTC+2
        (datetime(2025, 7, 5, 22, 30, tzinfo=UTC), "Sunday 01:30", False),  # UTC Saturday
    ])
    async def test_the_clock_is_read_in_the_business_timezone(
            self, http: httpx.AsyncClient, utc_moment: datetime, local_time: str,
            open_now: bool) -> None:
        outcome = await self.hours(http, utc_moment)
        assert outcome.output["local_time"] == local_time
        assert outcome.output["open_now"] is open_now

    async def test_matches_hours_answer(self, http: httpx.AsyncClient) -> None:
        now = jerusalem(2025, 7, 8, 12, 59)
        outcome = await self.hours(http, now)
        assert outcome.output == hours_answer(CLINIC_HOURS, JERUSALEM, now)
        assert outcome.output_json() == orjson.dumps(outcome.output).decode()

    async def test_no_hours_configured(self, http: httpx.AsyncClient) -> None:
        outcome = await self.hours(http, jerusalem(2025, 7, 6, 10), hours_plan(()))
        assert outcome.error is True  # not even offered to the model
        assert outcome.output["error"].startswith("no such tool on this call")

    async def test_misconfigured_hours_are_an_error_and_a_warning(
            self, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger="hotline.tools")
        plan = hours_plan((("sun", "9-5"),))
        outcome = await self.hours(http, jerusalem(2025, 7, 6, 10), plan)
        assert_error(outcome, "check_hours", "not available")
        assert "'9-5' is not a HH:MM-HH:MM range" in caplog.text
        bad_zone = dataclasses.replace(hours_plan(), timezone="Mars/Olympus")
        assert_error(await self.hours(http, jerusalem(2025, 7, 6, 10), bad_zone),
                     "check_hours")


class TestHoursParsing:
    @pytest.mark.parametrize("text, fragment", [
        ("9-5", "is not a HH:MM-HH:MM range"),
        ("08:00-13:00; 16:00-19:00", "is not a HH:MM-HH:MM range"),
        ("25:00-26:00", "is not a time of day"),
        ("08:60-09:00", "is not a time of day"),
        ("22:00-24:30", "is not a time of day"),
        ("22:00-02:00", "ends before it starts"),
        ("10:00-10:00", "ends before it starts"),
        ("08:00-13:00, 12:00-19:00", "overlapping"),
    ])
    def test_bad_day(self, text: str, fragment: str) -> None:
        with pytest.raises(ValueError, match=fragment):
            parse_day(text)

    def test_good_days(self) -> None:
        assert parse_day(" closed ") == ()
        assert parse_day("") == ()
        assert parse_day("16:00-19:00,8:00-13:00") == ((480, 780), (960, 1140))
        assert parse_day("22:00-24:00") == ((1320, 1440),)

    def test_week(self) -> None:
        week = parse_week((("Sunday", "08:00-12:00"), ("FRI", "closed")))
        assert week["sun"] == ((480, 720),) and week["fri"] == () and week["sat"] == ()
        with pytest.raises(ValueError, match="is not a weekday"):
            parse_week((("someday", "08:00-12:00"),))
        with pytest.raises(ValueError, match=r"^mon: "):
            parse_week((("mon", "8-12"),))

    def test_timezone(self) -> None:
        assert check_timezone(JERUSALEM).key == JERUSALEM
        with pytest.raises(ValueError, match="not an IANA timezone"):
            check_timezone("Mars/Olympus")

    def test_no_hours_at_all(self) -> None:
        answer = hours_answer((), JERUSALEM, jerusalem(2025, 7, 6, 10))
        assert answer["open_now"] is False and answer["next_opening"] is None


# -- signing ------------------------------------------------------------------------------
class TestSigning:
    body = b'{"tool":"lookup_booking","arguments":{}}'

    def test_round_trip(self) -> None:
        now = time.time()
        timestamp = str(int(now))
        header = sign_tool_request(SECRET, timestamp, self.body)
        assert header.startswith("sha256=") and len(header) == len("sha256=") + 64
        assert verify_tool_signature(SECRET, timestamp, self.body, header, now=now)

    @pytest.mark.parametrize("change", ["secret", "body", "timestamp", "scheme", "garbage"])
    def test_any_change_fails(self, change: str) -> None:
        now = time.time()
        timestamp = str(int(now))
        header = sign_tool_request(SECRET, timestamp, self.body)
        secret, body = SECRET, self.body
        if change == "secret":
            secret = "another secret"
        elif change == "body":
            body = self.body.replace(b"{}", b'{"x":1}')
        elif change == "timestamp":
            timestamp = str(int(now) - 1)
        elif change == "scheme":
            header = header.removeprefix("sha256=")
        else:
            header = "sha256=ünïcode"
        assert not verify_tool_signature(secret, timestamp, body, header, now=now)

    def test_stale_or_future_timestamps_fail(self) -> None:
        now = time.time()
        for offset in (-301, 301):
            timestamp = str(int(now) + offset)
            header = sign_tool_request(SECRET, timestamp, self.body)
            assert not verify_tool_signature(SECRET, timestamp, self.body, header, now=now)
            assert verify_tool_signature(SECRET, timestamp, self.body, header, now=now,
                                         tolerance_s=400)

    def test_malformed_timestamp_fails(self) -> None:
        header = sign_tool_request(SECRET, "soon", self.body)
        assert not verify_tool_signature(SECRET, "soon", self.body, header, now=time.time())


# -- HTTP tools against a real server -----------------------------------------------------
class Receiver:
    """A business's tool endpoint: verifies every request, then answers per path."""

    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.release = asyncio.Event()  # lets /slow finish at teardown
        self.url = ""
        self.app = Starlette(routes=[Route("/{kind}", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append((dict(request.headers), body))
        if not verify_tool_signature(self.secret, request.headers.get(TIMESTAMP_HEADER, ""),
                                     body, request.headers.get(SIGNATURE_HEADER, ""),
                                     now=time.time()):
            return PlainTextResponse("bad signature", status_code=401)
        call = orjson.loads(body)
        match request.path_params["kind"]:
            case "booking":
                return JSONResponse({"found": True, "when": "Tuesday 10:00",
                                     "echo": call["arguments"]})
            case "slow":
                await asyncio.wait_for(self.release.wait(), 5)
                return JSONResponse({"late": True})
            case "fail":
                return PlainTextResponse("oops", status_code=500)
            case "text":
                return PlainTextResponse("all good")
            case "big":
                return JSONResponse({"blob": "x" * MAX_REPLY_BYTES})
            case "empty":
                return Response(status_code=204)
            case "list":
                return JSONResponse([1, 2, 3])
            case "redirect":
                return RedirectResponse(f"{self.url}/booking", status_code=307)
        return PlainTextResponse("no such tool", status_code=404)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    async with LocalServer(receiver.app) as receiver.url:
        try:
            yield receiver
        finally:
            receiver.release.set()  # a handler still waiting must not hold the shutdown


def http_plan(receiver: Receiver, kind: str = "booking", *, timeout_s: float = 2.0,
              **overrides: Any) -> CallPlan:
    tool = HttpTool(
        "lookup_booking", "Find the caller's next booking.", f"{receiver.url}/{kind}",
        {"type": "object", "properties": {"phone": {"type": "string"},
                                          "days": {"type": "integer"}},
         "required": ["phone"]},
        timeout_s=timeout_s)
    return make_plan(http_tools=(tool,), business_slug="acme-dental", **overrides)


@pytest.mark.sockets
class TestHttpTools:
    async def test_signed_call_and_json_reply(self, http: httpx.AsyncClient,
                                              receiver: Receiver) -> None:
        plan = http_plan(receiver)
        outcome = await toolbox(http, plan).run("lookup_booking",
                                                args(phone="054-1234567", days=7),
                                                taken_ms=0)
        assert outcome == ToolOutcome(output={"result": {
            "found": True, "when": "Tuesday 10:00",
            "echo": {"phone": "054-1234567", "days": 7}}})
        [(headers, body)] = receiver.requests
        assert orjson.loads(body) == {"tool": "lookup_booking",
                                      "arguments": {"phone": "054-1234567", "days": 7},
                                      "call_sid": plan.call_sid, "business": "acme-dental"}
        assert headers["content-type"] == "application/json"
        assert headers[SIGNATURE_HEADER.lower()] == sign_tool_request(
            SECRET, headers[TIMESTAMP_HEADER.lower()], body)

    async def test_any_json_value_is_relayed(self, http: httpx.AsyncClient,
                                             receiver: Receiver) -> None:
        outcome = await toolbox(http, http_plan(receiver, "list")).run(
            "lookup_booking", args(phone="1"), taken_ms=0)
        assert outcome.output == {"result": [1, 2, 3]}
        assert outcome.output_json() == '{"result":[1,2,3]}'

    async def test_no_content_is_a_null_result(self, http: httpx.AsyncClient,
                                               receiver: Receiver) -> None:
        outcome = await toolbox(http, http_plan(receiver, "empty")).run(
            "lookup_booking", args(phone="1"), taken_ms=0)
        assert outcome == ToolOutcome(output={"result": None})

    async def test_slow_endpoint_times_out(self, http: httpx.AsyncClient,
                                           receiver: Receiver) -> None:
        box = toolbox(http, http_plan(receiver, "slow", timeout_s=0.2))
        started = time.monotonic()
        outcome = await box.run("lookup_booking", args(phone="1"), taken_ms=0)
        assert time.monotonic() - started < 2
        assert_error(outcome, "lookup_booking", "timed out after 0.2s")

    @pytest.mark.parametrize("kind, fragment", [
        ("fail", "HTTP 500"),
        ("nowhere", "HTTP 404"),
        ("redirect", "HTTP 307"),  # never follows a signed body elsewhere
        ("text", "not JSON"),
        ("big", f"larger than {MAX_REPLY_BYTES} bytes"),
    ])
    async def test_bad_replies(self, http: httpx.AsyncClient, receiver: Receiver,
                               kind: str, fragment: str) -> None:
        outcome = await toolbox(http, http_plan(receiver, kind)).run(
            "lookup_booking", args(phone="1"), taken_ms=0)
        assert_error(outcome, "lookup_booking", fragment)
        assert len(receiver.requests) == 1

    async def test_receiver_with_another_secret_rejects(self, http: httpx.AsyncClient,
                                                        receiver: Receiver) -> None:
        receiver.secret = "the business rotated its secret"
        outcome = await toolbox(http, http_plan(receiver)).run(
            "lookup_booking", args(phone="1"), taken_ms=0)
        assert_error(outcome, "lookup_booking", "HTTP 401")

    async def test_receiver_rejects_a_replayed_timestamp(self, http: httpx.AsyncClient,
                                                         receiver: Receiver) -> None:
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        box = toolbox(http, http_plan(receiver), clock=fixed_clock(an_hour_ago))
        outcome = await box.run("lookup_booking", args(phone="1"), taken_ms=0)
        assert_error(outcome, "lookup_booking", "HTTP 401")

    @pytest.mark.parametrize("secret", [None, ""])
    async def test_missing_secret_never_calls_out(
            self, http: httpx.AsyncClient, receiver: Receiver, secret: str | None) -> None:
        outcome = await toolbox(http, http_plan(receiver), secret=secret).run(
            "lookup_booking", args(phone="1"), taken_ms=0)
        assert_error(outcome, "lookup_booking", "HOTLINE_TOOL_SIGNING_SECRET")
        assert receiver.requests == []

    async def test_bad_arguments_never_call_out(self, http: httpx.AsyncClient,
                                                receiver: Receiver) -> None:
        box = toolbox(http, http_plan(receiver))
        assert_error(await box.run("lookup_booking", args(days=3), taken_ms=0),
                     "lookup_booking", "missing required argument 'phone'")
        assert_error(await box.run("lookup_booking", args(phone="1", days="3"), taken_ms=0),
                     "lookup_booking", "'days'", "integer")
        assert_error(await box.run("lookup_booking", args(phone="1", days=True), taken_ms=0),
                     "lookup_booking", "'days'")
        assert_error(await box.run("lookup_booking", "[]", taken_ms=0), "lookup_booking")
        assert receiver.requests == []

    async def test_connection_refused(self, http: httpx.AsyncClient) -> None:
        sock = LocalServer.bind()
        port = sock.getsockname()[1]
        sock.close()  # nothing listens there now
        tool = HttpTool("lookup_booking", "d", f"http://127.0.0.1:{port}/x",
                        {"type": "object", "properties": {}}, timeout_s=2)
        outcome = await toolbox(http, make_plan(http_tools=(tool,))).run(
            "lookup_booking", "{}", taken_ms=0)
        assert_error(outcome, "lookup_booking", "could not reach")

    async def test_invalid_url(self, http: httpx.AsyncClient) -> None:
        tool = HttpTool("lookup_booking", "d", "ftp://example.invalid/x", {})
        outcome = await toolbox(http, make_plan(http_tools=(tool,))).run(
            "lookup_booking", "{}", taken_ms=0)
        assert_error(outcome, "lookup_booking", "could not reach")

    async def test_logs_name_no_secret_no_values(
            self, http: httpx.AsyncClient, receiver: Receiver,
            caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger="hotline.tools")
        for kind in ("fail", "text", "big"):
            await toolbox(http, http_plan(receiver, kind)).run(
                "lookup_booking", args(phone=PERSONAL), taken_ms=0)
        await toolbox(http, http_plan(receiver), secret=None).run(
            "lookup_booking", args(phone=PERSONAL), taken_ms=0)
        tool_lines = [r for r in caplog.records if r.name == "hotline.tools"]
        assert len(tool_lines) == 4
        assert all(r.levelno == logging.WARNING for r in tool_lines)
        assert all("lookup_booking" in r.getMessage() for r in tool_lines)
        assert SECRET not in caplog.text and PERSONAL not in caplog.text
        assert "/fail" not in caplog.text  # only the host: a path may carry a key


def test_tool_error_shape() -> None:
    outcome = tool_error("lookup_booking", "timed out after 5s")
    assert outcome == ToolOutcome(output={"error": "timed out after 5s",
                                          "tool": "lookup_booking"}, error=True)
    assert outcome.output_json() == '{"error":"timed out after 5s","tool":"lookup_booking"}'
