"""Checks a business or template definition once, where it enters: CLI, YAML, admin, store.

Each check returns the value normalised (phone numbers without separators, text stripped)
or raises `InvalidBusiness` naming the field, so callers can prefix the file and business.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from hotline.business import (
    BUILTIN_TOOLS,
    DTMF_ACTIONS,
    BusinessConfig,
    GreetingTiming,
    HttpTool,
    TemplateConfig,
)
from hotline.errors import InvalidBusiness
from hotline.hours import WEEKDAYS, check_timezone, parse_week, weekday_key
from hotline.prompts import compact_prompt

SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
TEMPLATE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# ISO 639 language, optionally a region: "he", "en", "en-US", "yue".
LANGUAGE_RE = re.compile(r"[a-z]{2,3}(-[A-Z]{2})?")
VOICE_RE = re.compile(r"[a-z0-9_-]{1,32}")
# E.164: a plus sign and 8 to 15 digits, the first not zero.
E164_RE = re.compile(r"\+[1-9][0-9]{7,14}")
# What people type inside a number and E.164 leaves out.
_NUMBER_SEPARATORS = str.maketrans("", "", " -().")
# The tool names the realtime API accepts for functions.
HTTP_TOOL_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
DTMF_KEYS = "0123456789*#"
MIN_CALL_DURATION_S, MAX_CALL_DURATION_S = 5, 4 * 60 * 60
MAX_HTTP_TOOL_TIMEOUT_S = 30.0
# Ten years: past that a retention is a typo (and days beyond it overflow date arithmetic).
MAX_RECORDING_RETENTION_DAYS = 3650
TRANSFER = "transfer_to_human"
# The compact prompt (role, tone, greeting rules and the greeting) is sent before the first
# word: past this it slows every greeting down (the prompts are ~800-900 chars today).
MAX_COMPACT_PROMPT_CHARS = 1200


def _text(field: str, value: str, *, required: bool) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidBusiness(f"{field}: must not be empty")
    return value


def check_phone_number(number: str, field: str = "number") -> str:
    """`number` in E.164 (`+` and 8–15 digits); spaces, dashes, dots and brackets dropped."""
    compact = number.strip().translate(_NUMBER_SEPARATORS)
    if not E164_RE.fullmatch(compact):
        raise InvalidBusiness(
            f"{field}: {number!r} is not an E.164 phone number (+ and 8-15 digits, "
            "e.g. +14155550100)"
        )
    return compact


def check_greeting_template(text: str, field: str = "greeting") -> tuple[str, ...]:
    """The {placeholders} of a greeting, in order; malformed or positional ones are errors."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise InvalidBusiness(f"{field}: {exc} in {text!r}") from None
    for name in names:
        if not name.isidentifier():
            raise InvalidBusiness(
                f"{field}: placeholder {{{name}}} must be a name such as {{first_name}}"
            )
    return tuple(dict.fromkeys(names))


def check_greeting_timing(value: object, field: str = "greeting_timing") -> GreetingTiming:
    """`immediate` or `after_amd` (the enum, or its text) as a `GreetingTiming`."""
    if isinstance(value, str):
        try:
            return GreetingTiming(value)
        except ValueError:
            pass
    known = ", ".join(timing.value for timing in GreetingTiming)
    raise InvalidBusiness(f"{field}: {value!r} is not a greeting timing (known: {known})")


def check_template(template: TemplateConfig) -> TemplateConfig:
    if not TEMPLATE_NAME_RE.fullmatch(template.name):
        raise InvalidBusiness(
            f"templates.name: {template.name!r} must be letters, digits, '-' or '_' (at most 64)"
        )
    field = f"templates[{template.name}]"
    greeting = _text(f"{field}.greeting", template.greeting_template, required=True)
    check_greeting_template(greeting, f"{field}.greeting")
    voicemail = _text(f"{field}.voicemail", template.voicemail_template, required=False)
    check_greeting_template(voicemail, f"{field}.voicemail")
    timing = template.greeting_timing
    return replace(
        template,
        greeting_template=greeting,
        instructions=_text(f"{field}.instructions", template.instructions, required=False),
        voicemail_template=voicemail,
        greeting_timing=(
            None if timing is None else check_greeting_timing(timing, f"{field}.greeting_timing")
        ),
    )


def check_business(business: BusinessConfig) -> BusinessConfig:
    """The business, normalised; the first invalid field raises `InvalidBusiness`."""
    if not SLUG_RE.fullmatch(business.slug):
        raise InvalidBusiness(
            f"slug: {business.slug!r} must be lowercase letters, digits and '-' (at most 64)"
        )
    if not LANGUAGE_RE.fullmatch(business.language):
        raise InvalidBusiness(
            f"language: {business.language!r} is not a language code such as 'he' or 'en-US'"
        )
    if not VOICE_RE.fullmatch(business.voice):
        raise InvalidBusiness(f"voice: {business.voice!r} is not a voice name such as 'marin'")
    try:
        check_timezone(business.timezone)
    except ValueError as exc:
        raise InvalidBusiness(f"timezone: {exc}") from None
    if not business.phone_numbers:
        raise InvalidBusiness("numbers: a business needs at least one phone number")
    numbers = tuple(
        check_phone_number(number, f"numbers[{i}]")
        for i, number in enumerate(business.phone_numbers)
    )
    if len(set(numbers)) != len(numbers):
        raise InvalidBusiness(f"numbers: {', '.join(numbers)} lists a number twice")
    templates = tuple(check_template(t) for t in business.templates)
    names = [t.name for t in templates]
    if len(set(names)) != len(names):
        raise InvalidBusiness(f"templates: {', '.join(names)} names a template twice")
    checked = replace(
        business,
        name=_text("name", business.name, required=True),
        greeting=_text("greeting", business.greeting, required=True),
        role=_text("prompt.role", business.role, required=True),
        tone=_text("prompt.tone", business.tone, required=False),
        greeting_rules=_text("prompt.greeting_rules", business.greeting_rules, required=False),
        knowledge=_text("prompt.knowledge", business.knowledge, required=False),
        policies=_text("prompt.policies", business.policies, required=False),
        faq=_text("prompt.faq", business.faq, required=False),
        phone_numbers=numbers,
        templates=templates,
        greeting_timing=check_greeting_timing(business.greeting_timing),
        **_call_control(business),
    )
    size = len(compact_prompt(checked, checked.greeting))
    if size > MAX_COMPACT_PROMPT_CHARS:
        raise InvalidBusiness(
            f"prompt: the compact prompt (role, tone, greeting_rules and the greeting) is "
            f"{size} characters, over its limit of {MAX_COMPACT_PROMPT_CHARS}; move detail "
            "to knowledge, policies or faq"
        )
    return checked


def _call_control(business: BusinessConfig) -> dict[str, Any]:
    """The call control fields, checked and normalised, as `replace()` arguments."""
    tools = check_tools(business.tools)
    dtmf_actions = check_dtmf_actions(business.dtmf_actions)
    transfer_number = business.transfer_number
    if transfer_number is not None and transfer_number.strip():
        transfer_number = check_phone_number(transfer_number, "transfer_number")
    else:
        transfer_number = None
    if transfer_number is None and (
        TRANSFER in tools or any(action == TRANSFER for _, action in dtmf_actions)
    ):
        raise InvalidBusiness(
            f"transfer_number: required when {TRANSFER} is enabled (in tools or dtmf); "
            "give the E.164 number a transfer dials, e.g. +14155550199"
        )
    return {
        "tools": tools,
        "transfer_number": transfer_number,
        "opening_hours": check_opening_hours(business.opening_hours),
        "dtmf_actions": dtmf_actions,
        "max_call_duration_s": check_max_call_duration(business.max_call_duration_s),
        "http_tools": check_http_tools(business.http_tools),
        "recording": check_recording(business.recording),
        "recording_retention_days": check_recording_retention_days(
            business.recording_retention_days),
    }


def check_tools(tools: tuple[str, ...]) -> tuple[str, ...]:
    """Built-in tool names, each at most once."""
    for i, name in enumerate(tools):
        if name not in BUILTIN_TOOLS:
            raise InvalidBusiness(
                f"tools[{i}]: {name!r} is not a built-in tool (known: {', '.join(BUILTIN_TOOLS)})"
            )
    if len(set(tools)) != len(tools):
        raise InvalidBusiness(f"tools: {', '.join(tools)} names a tool twice")
    return tuple(tools)


def check_opening_hours(hours: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """(weekday, ranges) pairs, weekdays as `mon`…`sun` in week order, ranges stripped."""
    try:
        parse_week(hours)
    except ValueError as exc:
        raise InvalidBusiness(f"hours: {exc}") from None
    given = {weekday_key(day): text.strip() for day, text in hours}
    return tuple((day, given[day]) for day in WEEKDAYS if day in given)


def check_dtmf_actions(actions: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """(key, action) pairs: a key 0-9, * or #, at most once; an action from DTMF_ACTIONS."""
    for key, action in actions:
        if not isinstance(key, str) or len(key) != 1 or key not in DTMF_KEYS:
            raise InvalidBusiness(f"dtmf: {key!r} is not a phone key (0-9, * or #)")
        if action not in DTMF_ACTIONS:
            raise InvalidBusiness(
                f"dtmf[{key}]: {action!r} is not an action (known: {', '.join(DTMF_ACTIONS)})"
            )
    keys = [key for key, _ in actions]
    if len(set(keys)) != len(keys):
        raise InvalidBusiness(f"dtmf: {', '.join(keys)} lists a key twice")
    return tuple(actions)


def check_max_call_duration(seconds: int) -> int:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int)
        or not MIN_CALL_DURATION_S <= seconds <= MAX_CALL_DURATION_S
    ):
        raise InvalidBusiness(
            f"max_call_duration_s: {seconds!r} must be a whole number of seconds from "
            f"{MIN_CALL_DURATION_S} to {MAX_CALL_DURATION_S}"
        )
    return seconds


def check_recording(recording: bool) -> bool:
    if not isinstance(recording, bool):
        raise InvalidBusiness(f"recording: expected true or false, not {recording!r}")
    return recording


def check_recording_retention_days(days: int) -> int:
    if (
        isinstance(days, bool)
        or not isinstance(days, int)
        or not 1 <= days <= MAX_RECORDING_RETENTION_DAYS
    ):
        raise InvalidBusiness(
            f"recording_retention_days: {days!r} must be a whole number of days from 1 to "
            f"{MAX_RECORDING_RETENTION_DAYS}"
        )
    return days


def check_http_tools(tools: tuple[HttpTool, ...]) -> tuple[HttpTool, ...]:
    checked = tuple(check_http_tool(tool) for tool in tools)
    names = [tool.name for tool in checked]
    if len(set(names)) != len(names):
        raise InvalidBusiness(f"http_tools: {', '.join(names)} names a tool twice")
    return checked


def check_http_tool(tool: HttpTool) -> HttpTool:
    """One HTTP tool, its description stripped and its timeout a float."""
    if not HTTP_TOOL_NAME_RE.fullmatch(tool.name):
        raise InvalidBusiness(
            f"http_tools.name: {tool.name!r} must be 1-64 letters, digits, '_' or '-'"
        )
    field = f"http_tools[{tool.name}]"
    if tool.name in BUILTIN_TOOLS:
        raise InvalidBusiness(f"{field}.name: {tool.name!r} is a built-in tool's name")
    url = urlsplit(tool.url.strip())
    if url.scheme not in ("http", "https") or not url.netloc:
        raise InvalidBusiness(f"{field}.url: {tool.url!r} must be an http:// or https:// URL")
    _check_parameters_schema(tool.parameters, f"{field}.parameters")
    timeout_s = tool.timeout_s
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not 0 < timeout_s <= MAX_HTTP_TOOL_TIMEOUT_S
    ):
        raise InvalidBusiness(
            f"{field}.timeout_s: {timeout_s!r} must be more than 0 and at most "
            f"{MAX_HTTP_TOOL_TIMEOUT_S:g} seconds"
        )
    return replace(
        tool,
        description=_text(f"{field}.description", tool.description, required=True),
        url=tool.url.strip(),
        timeout_s=float(timeout_s),
    )


def _check_parameters_schema(parameters: object, field: str) -> None:
    """A JSON schema of an object (what function-calling models take as arguments)."""
    if not isinstance(parameters, Mapping) or parameters.get("type") != "object":
        raise InvalidBusiness(
            f'{field}: must be a JSON schema object, e.g. {{"type": "object", "properties": '
            '{"date": {"type": "string"}}}'
        )
    try:
        plain = json.loads(json.dumps(parameters, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidBusiness(f"{field}: not plain JSON ({exc})") from None
    if plain != parameters:  # e.g. number keys, which JSON turns into strings
        raise InvalidBusiness(f"{field}: not plain JSON (keys must be text)")
    if not isinstance(parameters.get("properties", {}), Mapping):
        raise InvalidBusiness(f"{field}.properties: must be a mapping of argument schemas")
