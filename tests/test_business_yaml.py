"""Business YAML: the call control keys (tools, transfer number, hours, DTMF, call length,
HTTP tools), greeting timing and template voicemail, read, refused with a message naming the
field, and written back so that `load(dump(b)) == b`."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotline.business import (
    BUILTIN_TOOLS,
    DEFAULT_TOOLS,
    DTMF_ACTIONS,
    BusinessConfig,
    GreetingTiming,
    HttpTool,
    TemplateConfig,
)
from hotline.business_yaml import dump_business_yaml, load_businesses_yaml
from hotline.errors import InvalidBusiness
from hotline.hours import WEEKDAYS
from hotline.store.validation import check_business

BASE = """\
businesses:
  - slug: acme
    name: Acme Plumbing
    language: en
    voice: cedar
    greeting: Acme Plumbing, how can I help?
    numbers: ["+14155550100"]
    prompt: {role: You answer the phone for Acme Plumbing.}
"""

FULL = BASE + """\
    timezone: America/Los_Angeles
    tools: [end_call, transfer_to_human, take_message, check_hours]
    transfer_number: "+1 415 555 0199"
    hours:
      sat: "08:00-12:00"
      Monday: "07:00-12:00, 13:00-18:00"
      sun: closed
    dtmf:
      0: transfer_to_human
      "#": end_call
    max_call_duration_s: 900
    greeting_timing: after_amd
    http_tools:
      - name: book_slot
        description: Book a visit slot for the caller.
        url: https://acme.example/hotline/book
        parameters:
          type: object
          properties:
            date: {type: string, description: YYYY-MM-DD}
          required: [date]
        timeout_s: 3
      - name: order-status
        description: Look up an order by its number.
        url: http://orders.acme.example/status
    templates:
      - name: reminder
        greeting: "Hi {name}, a reminder from Acme."
        voicemail: "Hi {name}, please call Acme back at 415-555-0100."
        greeting_timing: immediate
"""


def load(text: str, tmp_path: Path) -> list[BusinessConfig]:
    path = tmp_path / "businesses.yaml"
    path.write_text(text, encoding="utf-8")
    return load_businesses_yaml(path)


def round_trip(business: BusinessConfig, tmp_path: Path) -> list[BusinessConfig]:
    return load(dump_business_yaml(business), tmp_path)


# -- reading ------------------------------------------------------------------------------
def test_every_call_control_key_is_read_and_normalised(tmp_path: Path) -> None:
    (business,) = load(FULL, tmp_path)
    assert business.tools == BUILTIN_TOOLS
    assert business.transfer_number == "+14155550199"
    # Week order, Monday first, three-letter days, whatever the file's order and spelling.
    assert business.opening_hours == (
        ("mon", "07:00-12:00, 13:00-18:00"), ("sat", "08:00-12:00"), ("sun", "closed"))
    assert business.dtmf_actions == (("0", "transfer_to_human"), ("#", "end_call"))
    assert business.max_call_duration_s == 900
    assert business.http_tools == (
        HttpTool(
            name="book_slot",
            description="Book a visit slot for the caller.",
            url="https://acme.example/hotline/book",
            parameters={"type": "object",
                        "properties": {"date": {"type": "string", "description": "YYYY-MM-DD"}},
                        "required": ["date"]},
            timeout_s=3.0,
        ),
        HttpTool(
            name="order-status",
            description="Look up an order by its number.",
            url="http://orders.acme.example/status",
            parameters={"type": "object", "properties": {}},  # no parameters: no arguments
            timeout_s=5.0,
        ),
    )
    (template,) = business.templates
    assert template.voicemail_template == "Hi {name}, please call Acme back at 415-555-0100."
    # The template's own timing, even the default one, is kept apart from the business's.
    assert business.greeting_timing is GreetingTiming.AFTER_AMD
    assert template.greeting_timing is GreetingTiming.IMMEDIATE


def test_without_call_control_keys_the_defaults_apply(tmp_path: Path) -> None:
    (business,) = load(BASE + "    templates: [{name: r, greeting: Hi}]\n", tmp_path)
    assert business.tools == DEFAULT_TOOLS
    assert (business.transfer_number, business.opening_hours, business.dtmf_actions) == (
        None, (), ())
    assert (business.max_call_duration_s, business.http_tools) == (600, ())
    assert business.templates[0].voicemail_template == ""
    assert business.greeting_timing is GreetingTiming.IMMEDIATE
    assert business.templates[0].greeting_timing is None  # the business's


def test_a_template_may_hold_its_greeting_for_the_verdict(tmp_path: Path) -> None:
    (business,) = load(
        BASE + "    templates:\n"
        "      - {name: r, greeting: Hi, greeting_timing: after_amd}\n"
        "      - {name: s, greeting: Hello}\n",
        tmp_path,
    )
    assert business.greeting_timing is GreetingTiming.IMMEDIATE
    assert [t.greeting_timing for t in business.templates] == [GreetingTiming.AFTER_AMD, None]


def test_an_empty_tool_list_enables_no_tool(tmp_path: Path) -> None:
    (business,) = load(BASE + "    tools: []\n", tmp_path)
    assert business.tools == ()


@pytest.mark.parametrize("key", [*(str(digit) for digit in range(10)), "*", "#"])
def test_every_phone_key_can_be_mapped(tmp_path: Path, key: str) -> None:
    (business,) = load(BASE + f'    dtmf: {{"{key}": end_call}}\n', tmp_path)
    assert business.dtmf_actions == ((key, "end_call"),)


BAD: dict[str, tuple[str, str]] = {
    "tools not a list": ("    tools: end_call\n", "tools: expected a list of tool names"),
    "unknown tool": ("    tools: [end_call, fly]\n", "tools[1]: 'fly' is not a built-in tool"),
    "transfer number unquoted": (
        "    transfer_number: +14155550199\n", 'transfer_number: put the number in quotes'),
    "transfer without a number": (
        "    tools: [transfer_to_human]\n", "transfer_number: required when transfer_to_human"),
    "transfer key without a number": (
        "    dtmf: {0: transfer_to_human}\n", "transfer_number: required when transfer_to_human"),
    "bad transfer number": (
        '    transfer_number: "555-0199"\n', "transfer_number: '555-0199' is not an E.164"),
    "hours not a mapping": ("    hours: [mon]\n", "hours: expected a mapping of weekday"),
    "hours off": ("    hours: {sat: off}\n", "hours.sat: write closed"),
    "hours not a range": ("    hours: {mon: 9-5}\n", "hours: mon: '9-5' is not a HH:MM-HH:MM"),
    "not a weekday": ('    hours: {someday: "09:00-17:00"}\n', "hours: 'someday' is not a weekday"),
    "day twice": (
        '    hours: {mon: "09:00-12:00", monday: "13:00-17:00"}\n', "hours: mon listed twice"),
    "hours not text": ("    hours: {mon: 9}\n", "hours.mon: expected text"),
    "dtmf not a mapping": ("    dtmf: [0]\n", "dtmf: expected a mapping of key to action"),
    "two-digit key": ("    dtmf: {10: end_call}\n", "dtmf: 10 is not a phone key"),
    "letter key": ("    dtmf: {A: end_call}\n", "dtmf: 'A' is not a phone key"),
    "same key twice": (
        '    dtmf: {0: end_call, "0": end_call}\n', "dtmf: 0, 0 lists a key twice"),
    "unknown action": ('    dtmf: {"1": dance}\n', "dtmf[1]: 'dance' is not an action"),
    "star unquoted": ("    dtmf: {*: end_call}\n", "not valid YAML"),
    "call length as text": ("    max_call_duration_s: 10m\n", "max_call_duration_s: expected a"),
    "call too short": ("    max_call_duration_s: 4\n", "max_call_duration_s: 4 must be"),
    "http tools not a list": ("    http_tools: {name: x}\n", "http_tools: expected a list"),
    "http tool without url": (
        "    http_tools: [{name: x, description: X.}]\n", "http_tools[0].url: required field"),
    "http tool unknown key": (
        "    http_tools: [{name: x, description: X., url: 'https://a.example', method: GET}]\n",
        "http_tools[0].method: unknown field"),
    "http tool parameters as text": (
        "    http_tools: [{name: x, description: X., url: 'https://a.example',"
        " parameters: none}]\n", "http_tools[0].parameters: expected a JSON schema mapping"),
    "http tool timeout as text": (
        "    http_tools: [{name: x, description: X., url: 'https://a.example',"
        " timeout_s: 5s}]\n", "http_tools[0].timeout_s: expected a number of seconds"),
    "http tool bad url": (
        "    http_tools: [{name: x, description: X., url: 'a.example/x'}]\n",
        "http_tools[x].url: 'a.example/x' must be an http:// or https:// URL"),
    "http tool built-in name": (
        "    http_tools: [{name: check_hours, description: X., url: 'https://a.example'}]\n",
        "http_tools[check_hours].name: 'check_hours' is a built-in tool's name"),
    "voicemail placeholder": (
        "    templates: [{name: r, greeting: Hi, voicemail: 'Hi {0}'}]\n",
        "templates[r].voicemail: placeholder {0}"),
    "greeting timing unknown": (
        "    greeting_timing: later\n",
        "greeting_timing: 'later' is not a greeting timing (known: immediate, after_amd)"),
    "greeting timing as a number": (
        "    greeting_timing: 1500\n", "greeting_timing: 1500 is not a greeting timing"),
    "greeting timing empty": (
        "    greeting_timing:\n", "greeting_timing: None is not a greeting timing"),
    "greeting timing in capitals": (
        "    greeting_timing: AFTER_AMD\n", "greeting_timing: 'AFTER_AMD' is not a greeting"),
    "template greeting timing unknown": (
        "    templates: [{name: r, greeting: Hi, greeting_timing: after-amd}]\n",
        "templates[0].greeting_timing: 'after-amd' is not a greeting timing"),
    "template greeting timing empty": (
        "    templates: [{name: r, greeting: Hi, greeting_timing: null}]\n",
        "templates[0].greeting_timing: None is not a greeting timing"),
    "voicemail misspelled": (
        "    templates: [{name: r, greeting: Hi, voice_mail: Hi}]\n",
        "templates[0].voice_mail: unknown field"),
}


@pytest.mark.parametrize(("extra", "message"), BAD.values(), ids=BAD.keys())
def test_a_bad_call_control_key_is_refused_naming_the_field(
    tmp_path: Path, extra: str, message: str
) -> None:
    path = tmp_path / "businesses.yaml"
    with pytest.raises(InvalidBusiness, match=re.escape(message)) as caught:
        load(BASE + extra, tmp_path)
    if message != "not valid YAML":
        assert str(caught.value).startswith(f"{path}: business #1 (acme): ")


# -- writing ------------------------------------------------------------------------------
def test_a_business_with_every_key_round_trips(tmp_path: Path) -> None:
    (business,) = load(FULL, tmp_path)
    text = dump_business_yaml(business)
    assert round_trip(business, tmp_path) == [business]
    for line in ("  transfer_number: '+14155550199'", "    '0': transfer_to_human",
                 "  greeting_timing: after_amd", "    greeting_timing: immediate",
                 "    '#': end_call", "  max_call_duration_s: 900", "    sat: 08:00-12:00"):
        assert line in text.splitlines(), line


def test_defaults_round_trip_and_a_no_tool_business_stays_without_tools(
    tmp_path: Path,
) -> None:
    (business,) = load(BASE, tmp_path)
    assert round_trip(business, tmp_path) == [business]
    text = dump_business_yaml(business)
    assert "voicemail" not in text
    assert "greeting_timing" not in text  # the default, and no template override
    no_tools = replace(business, tools=())
    assert round_trip(no_tools, tmp_path) == [no_tools]


_SAFE_TEXT = st.text(
    st.characters(categories=["L", "N", "P", "Zs"], exclude_characters="\x85\u2028\u2029"),
    min_size=1, max_size=40,
).filter(lambda text: text.strip() != "")
_RANGES = st.sampled_from(["closed", "08:00-17:00", "07:00-12:00, 13:00-18:00", "00:00-24:00"])
_HTTP_TOOLS = st.lists(
    st.builds(
        HttpTool,
        name=st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True).filter(
            lambda name: name not in BUILTIN_TOOLS),
        description=_SAFE_TEXT,
        url=st.sampled_from(["https://a.example/x", "http://b.example:8080/y?z=1"]),
        parameters=st.sampled_from([
            {"type": "object", "properties": {}},
            {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}},
             "required": ["n"], "additionalProperties": False},
        ]),
        timeout_s=st.floats(min_value=0.001, max_value=30.0),
    ),
    max_size=3, unique_by=lambda tool: tool.name,
)


@st.composite
def call_controlled(draw: st.DrawFn) -> BusinessConfig:
    tools = tuple(draw(st.lists(st.sampled_from(BUILTIN_TOOLS), unique=True)))
    days = draw(st.lists(st.sampled_from(WEEKDAYS), unique=True))
    keys = draw(st.lists(st.sampled_from("0123456789*#"), unique=True, max_size=4))
    dtmf = tuple((key, draw(st.sampled_from(DTMF_ACTIONS))) for key in keys)
    wants_transfer = "transfer_to_human" in tools + tuple(action for _, action in dtmf)
    voicemail = draw(st.sampled_from(["", "Hi {name}, call us back.", "שלום {name}, חזרו אלינו"]))
    template_timing = draw(st.sampled_from([None, *GreetingTiming]))
    business = BusinessConfig(
        slug="acme", name="Acme", language="en", voice="cedar", greeting="Hi",
        role="You answer.", tone="", greeting_rules="", knowledge="", policies="", faq="",
        phone_numbers=("+14155550100",),
        tools=tools,
        transfer_number="+14155550199" if wants_transfer or draw(st.booleans()) else None,
        opening_hours=tuple((day, draw(_RANGES)) for day in days),
        dtmf_actions=dtmf,
        max_call_duration_s=draw(st.integers(min_value=30, max_value=14_400)),
        http_tools=tuple(draw(_HTTP_TOOLS)),
        greeting_timing=draw(st.sampled_from(GreetingTiming)),
        templates=(TemplateConfig("r", "Hi {name}", voicemail_template=voicemail,
                                  greeting_timing=template_timing),),
    )
    return check_business(business)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(business=call_controlled())
def test_any_valid_call_control_round_trips(tmp_path: Path, business: BusinessConfig) -> None:
    assert round_trip(business, tmp_path) == [business]


def test_a_compact_prompt_over_its_limit_is_refused(tmp_path: Path) -> None:
    # Role, tone, greeting rules and greeting go out before the first word; the full prompt's
    # parts (knowledge, policies, faq) may be as long as they need.
    long_role = BASE.replace("You answer the phone for Acme Plumbing.", "Answer. " * 200)
    with pytest.raises(InvalidBusiness, match=r"prompt: the compact prompt .* over its limit"):
        load(long_role, tmp_path)
    long_knowledge = BASE.replace("prompt: {role: You answer the phone for Acme Plumbing.}",
                                  "prompt: {role: You answer., knowledge: " + "Pipes. " * 2000
                                  + "}")
    [business] = load(long_knowledge, tmp_path)
    assert len(business.knowledge) > 10_000
