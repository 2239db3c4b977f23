"""Businesses as YAML files: what `hotline business import` reads and `business export` writes.

The format, one file holding any number of businesses::

    businesses:
      - slug: smile-dental-tlv       # required: lowercase letters, digits, '-'
        name: Smile Dental Clinic    # required
        language: he                 # required: ISO 639 code, e.g. he, en, en-US
        voice: marin                 # required: the realtime voice (marin, cedar, alloy, …)
        greeting: "Hello, …"         # required: the agent's first words on inbound calls
        bot_speaks_first: true       # optional, default true (false: the caller talks first)
        timezone: Asia/Jerusalem     # optional IANA zone, default UTC
        numbers:                     # required, at least one, E.164 in quotes
          - "+97235550100"
        prompt:
          role: |                    # required: who the agent is (compact prompt)
            You are …
          tone: …                    # compact prompt
          greeting_rules: …          # compact prompt: how to open and route the call
          knowledge: |               # full prompt: hours, services, prices, address
            …
          policies: |                # full prompt: cancellations, emergencies, privacy, limits
            …
          faq: |                     # full prompt: question and answer pairs
            …
        templates:                   # optional outbound call templates
          - name: appointment-reminder
            greeting: "Hi {name}, …" # {placeholders} are filled per call (--var name=…)
            instructions: |
              …
            voicemail: "Hi {name}, …"  # optional: left on an answering machine (same
                                       # placeholders); none: hang up without a message
            greeting_timing: after_amd  # optional: this template's, instead of the business's
        greeting_timing: immediate   # optional: when an outbound call's greeting starts while
                                     # answering-machine detection runs. immediate (default):
                                     # at pickup, and a machine's verdict cuts it for the
                                     # voicemail; after_amd: only once the verdict is in (at
                                     # most HOTLINE_AMD_GREETING_CAP_MS of silence after
                                     # pickup). Not `greeting`, which is the words themselves
        # Call control, all optional:
        tools: [end_call, transfer_to_human, take_message, check_hours]
                                     # built-in tools the agent may use; default
                                     # [end_call, take_message, check_hours]; [] for none
        transfer_number: "+97235550199"  # E.164, quoted: where transfer_to_human dials;
                                     # required when transfer_to_human is in tools or dtmf
        hours:                       # opening hours in `timezone`, for check_hours;
          sun: "08:00-19:00"         # weekday (mon … sun) -> HH:MM-HH:MM ranges, a split
          mon: "08:00-13:00, 16:00-19:00"  # day comma-separated; a day not listed (or
          fri: "08:00-13:00"         # `closed`) is closed; 24:00 ends a day
          sat: closed
        dtmf:                        # what a pressed key does, without asking the model
          "0": transfer_to_human     # key 0-9, * or # (quote * and #: YAML reads * as an
          "#": end_call              # alias and # as a comment); transfer_to_human|end_call
        max_call_duration_s: 600     # hang up after this long, 5 to 14400, default 600
        http_tools:                  # the business's own tools: Hotline POSTs the model's
          - name: book_slot          # arguments to `url` and hands the JSON reply back
            description: Book an appointment slot.   # required: when the model should call it
            url: https://example.com/hotline/book     # required: http:// or https://
            parameters:              # optional JSON schema of the arguments (an object);
              type: object           # default: no arguments
              properties:
                date: {type: string, description: "YYYY-MM-DD"}
              required: [date]
            timeout_s: 5             # optional, more than 0 and at most 30, default 5
        recording: false             # optional, default false: true keeps both sides of
                                     # each call as a WAV under HOTLINE_DATA_DIR/recordings
        recording_retention_days: 30 # optional, 1 to 3650, default 30: the retention
                                     # sweeper deletes a recording this many days after
                                     # its call

Every field other than those marked optional or in `prompt` (all optional but `role`) is
required; unknown fields are refused, so a typo never goes unnoticed. Numbers must be quoted:
YAML reads an unquoted +972… as an integer. Opening hours are kept in week order, Monday
first, whatever order the file lists them in.

`load_businesses_yaml` is pure (reads one file, touches no database) and raises
`InvalidBusiness` naming the file, the business and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hotline.business import (
    DEFAULT_RECORDING_RETENTION_DAYS,
    DEFAULT_TOOLS,
    BusinessConfig,
    GreetingTiming,
    HttpTool,
    TemplateConfig,
)
from hotline.errors import InvalidBusiness
from hotline.store.validation import check_business, check_greeting_timing

_BUSINESS_KEYS = {
    "slug", "name", "language", "voice", "greeting", "bot_speaks_first", "timezone",
    "numbers", "prompt", "templates", "tools", "transfer_number", "hours", "dtmf",
    "max_call_duration_s", "http_tools", "greeting_timing", "recording",
    "recording_retention_days",
}  # fmt: skip
_REQUIRED_BUSINESS_KEYS = ("slug", "name", "language", "voice", "greeting", "numbers", "prompt")
_PROMPT_KEYS = ("role", "tone", "greeting_rules", "knowledge", "policies", "faq")
_TEMPLATE_KEYS = ("name", "greeting", "instructions", "voicemail", "greeting_timing")
_HTTP_TOOL_KEYS = ("name", "description", "url", "parameters", "timeout_s")


def load_businesses_yaml(path: str | Path) -> list[BusinessConfig]:
    """Every business in the file, validated; the first problem raises `InvalidBusiness`."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidBusiness(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidBusiness(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise InvalidBusiness(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("businesses"), list):
        raise InvalidBusiness(f"{path}: expected a top-level 'businesses:' list")
    businesses: list[BusinessConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(document["businesses"], start=1):
        label = f"business #{index}"
        if isinstance(entry, Mapping) and isinstance(entry.get("slug"), str):
            label += f" ({entry['slug']})"
        try:
            business = check_business(_business(entry))
        except InvalidBusiness as exc:
            raise InvalidBusiness(f"{path}: {label}: {exc}") from None
        if business.slug in seen:
            raise InvalidBusiness(f"{path}: {label}: slug: {business.slug!r} appears twice")
        seen.add(business.slug)
        businesses.append(business)
    return businesses


def dump_business_yaml(business: BusinessConfig) -> str:
    """One business as a YAML document `load_businesses_yaml` reads back unchanged."""
    entry: dict[str, Any] = {
        "slug": business.slug,
        "name": business.name,
        "language": business.language,
        "voice": business.voice,
        "greeting": business.greeting,
        "bot_speaks_first": business.bot_speaks_first,
        "timezone": business.timezone,
        "numbers": list(business.phone_numbers),
        "prompt": {key: getattr(business, key) for key in _PROMPT_KEYS},
    }
    if business.templates:
        entry["templates"] = [_template_entry(t) for t in business.templates]
    entry.update(_call_control_entry(business))
    if business.greeting_timing is not GreetingTiming.IMMEDIATE:
        entry["greeting_timing"] = business.greeting_timing.value
    entry["recording"] = business.recording
    entry["recording_retention_days"] = business.recording_retention_days
    text: str = yaml.dump(
        {"businesses": [entry]},
        Dumper=_BlockDumper,
        allow_unicode=True,
        sort_keys=False,
        width=100,
    )
    return text


# -- reading ------------------------------------------------------------------------------
def _business(entry: object) -> BusinessConfig:
    fields = _mapping(entry, "", _BUSINESS_KEYS, _REQUIRED_BUSINESS_KEYS)
    prompt = _mapping(fields["prompt"], "prompt.", set(_PROMPT_KEYS), ("role",))
    numbers = fields["numbers"]
    if not isinstance(numbers, list):
        raise InvalidBusiness("numbers: expected a list of phone numbers")
    for i, number in enumerate(numbers):
        _number(number, f"numbers[{i}]")
    templates = fields.get("templates") or []
    if not isinstance(templates, list):
        raise InvalidBusiness("templates: expected a list of templates")
    bot_speaks_first = fields.get("bot_speaks_first", True)
    if not isinstance(bot_speaks_first, bool):
        raise InvalidBusiness(f"bot_speaks_first: expected true or false, not {bot_speaks_first!r}")
    recording = fields.get("recording", False)
    if not isinstance(recording, bool):
        raise InvalidBusiness(f"recording: expected true or false, not {recording!r}")
    http_tools = fields.get("http_tools") or []
    if not isinstance(http_tools, list):
        raise InvalidBusiness("http_tools: expected a list of tools")
    transfer_number = fields.get("transfer_number")
    if transfer_number is not None:
        transfer_number = _number(transfer_number, "transfer_number")
    return BusinessConfig(
        slug=_string(fields["slug"], "slug"),
        name=_string(fields["name"], "name"),
        language=_string(fields["language"], "language"),
        voice=_string(fields["voice"], "voice"),
        greeting=_string(fields["greeting"], "greeting"),
        phone_numbers=tuple(numbers),
        bot_speaks_first=bot_speaks_first,
        timezone=_string(fields.get("timezone", "UTC"), "timezone"),
        templates=tuple(_template(t, i) for i, t in enumerate(templates)),
        role=_string(prompt["role"], "prompt.role"),
        tone=_string(prompt.get("tone", ""), "prompt.tone"),
        greeting_rules=_string(prompt.get("greeting_rules", ""), "prompt.greeting_rules"),
        knowledge=_string(prompt.get("knowledge", ""), "prompt.knowledge"),
        policies=_string(prompt.get("policies", ""), "prompt.policies"),
        faq=_string(prompt.get("faq", ""), "prompt.faq"),
        tools=_tools(fields.get("tools")),
        transfer_number=transfer_number,
        opening_hours=_hours(fields.get("hours")),
        dtmf_actions=_dtmf(fields.get("dtmf")),
        max_call_duration_s=_whole_number(
            fields.get("max_call_duration_s", 600), "max_call_duration_s"
        ),
        http_tools=tuple(_http_tool(t, i) for i, t in enumerate(http_tools)),
        greeting_timing=check_greeting_timing(
            fields.get("greeting_timing", GreetingTiming.IMMEDIATE), "greeting_timing"
        ),
        recording=recording,
        recording_retention_days=_whole_number(
            fields.get("recording_retention_days", DEFAULT_RECORDING_RETENTION_DAYS),
            "recording_retention_days",
        ),
    )


def _template(entry: object, index: int) -> TemplateConfig:
    where = f"templates[{index}]."
    fields = _mapping(entry, where, set(_TEMPLATE_KEYS), ("name", "greeting"))
    return TemplateConfig(
        name=_string(fields["name"], where + "name"),
        greeting_template=_string(fields["greeting"], where + "greeting"),
        instructions=_string(fields.get("instructions", ""), where + "instructions"),
        voicemail_template=_string(fields.get("voicemail", ""), where + "voicemail"),
        greeting_timing=(
            check_greeting_timing(fields["greeting_timing"], where + "greeting_timing")
            if "greeting_timing" in fields
            else None  # the business's
        ),
    )


def _tools(value: object) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_TOOLS
    if not isinstance(value, list):
        raise InvalidBusiness("tools: expected a list of tool names, e.g. [end_call, check_hours]")
    return tuple(_string(name, f"tools[{i}]") for i, name in enumerate(value))


def _hours(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise InvalidBusiness(
            'hours: expected a mapping of weekday to hours, e.g. mon: "08:00-17:00"'
        )
    hours: list[tuple[str, str]] = []
    for day, ranges in value.items():
        day = _string(day, "hours")
        if ranges is False or ranges is None:  # YAML reads `off` and `no` as false
            raise InvalidBusiness(f"hours.{day}: write closed, or ranges such as \"08:00-17:00\"")
        hours.append((day, _string(ranges, f"hours.{day}")))
    return tuple(hours)


def _dtmf(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise InvalidBusiness(
            'dtmf: expected a mapping of key to action, e.g. "0": transfer_to_human'
        )
    actions: list[tuple[str, str]] = []
    for key, action in value.items():
        if isinstance(key, int) and not isinstance(key, bool) and 0 <= key <= 9:
            key = str(key)  # YAML reads an unquoted 0 as a number
        if not isinstance(key, str):
            raise InvalidBusiness(f'dtmf: {key!r} is not a phone key (0-9, "*" or "#", quoted)')
        actions.append((key, _string(action, f"dtmf[{key}]")))
    return tuple(actions)


def _http_tool(entry: object, index: int) -> HttpTool:
    where = f"http_tools[{index}]."
    fields = _mapping(entry, where, set(_HTTP_TOOL_KEYS), ("name", "description", "url"))
    # Without `parameters` the tool takes no arguments.
    parameters = fields.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, Mapping):
        raise InvalidBusiness(f"{where}parameters: expected a JSON schema mapping (type: object)")
    timeout_s = fields.get("timeout_s", 5.0)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
        raise InvalidBusiness(f"{where}timeout_s: expected a number of seconds, not {timeout_s!r}")
    return HttpTool(
        name=_string(fields["name"], where + "name"),
        description=_string(fields["description"], where + "description"),
        url=_string(fields["url"], where + "url"),
        parameters=dict(parameters),
        timeout_s=float(timeout_s),
    )


def _number(value: object, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise InvalidBusiness(
            f'{field}: put the number in quotes, e.g. "+{value}" '
            "(YAML reads an unquoted +… as an integer)"
        )
    return _string(value, field)


def _whole_number(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidBusiness(f"{field}: expected a whole number, not {value!r}")
    return value


def _mapping(
    value: object, where: str, allowed: set[str], required: tuple[str, ...]
) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidBusiness(f"{where.rstrip('.') or 'business'}: expected a mapping of fields")
    unknown = sorted(str(key) for key in value if key not in allowed)
    if unknown:
        raise InvalidBusiness(
            f"{where}{unknown[0]}: unknown field (known: {', '.join(sorted(allowed))})"
        )
    for key in required:
        if value.get(key) is None:
            raise InvalidBusiness(f"{where}{key}: required field missing")
    return value


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidBusiness(f"{field}: expected text, not {type(value).__name__} {value!r}")
    return value


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{problem} (line {mark.line + 1})" if mark is not None else problem


# -- writing ------------------------------------------------------------------------------
def _template_entry(template: TemplateConfig) -> dict[str, str]:
    entry = {
        "name": template.name,
        "greeting": template.greeting_template,
        "instructions": template.instructions,
    }
    if template.voicemail_template:
        entry["voicemail"] = template.voicemail_template
    if template.greeting_timing is not None:
        entry["greeting_timing"] = template.greeting_timing.value
    return entry


def _call_control_entry(business: BusinessConfig) -> dict[str, Any]:
    """The call control keys: `tools` and the limit always, the others when set."""
    entry: dict[str, Any] = {"tools": list(business.tools)}
    if business.transfer_number is not None:
        entry["transfer_number"] = business.transfer_number
    if business.opening_hours:
        entry["hours"] = dict(business.opening_hours)
    if business.dtmf_actions:
        entry["dtmf"] = dict(business.dtmf_actions)
    entry["max_call_duration_s"] = business.max_call_duration_s
    if business.http_tools:
        entry["http_tools"] = [
            {
                "name": tool.name,
                "description": tool.description,
                "url": tool.url,
                "parameters": tool.parameters,
                "timeout_s": tool.timeout_s,
            }
            for tool in business.http_tools
        ]
    return entry


class _BlockDumper(yaml.SafeDumper):
    """Multi-line text as `|` blocks, so exported prompts read like the files people write."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)
