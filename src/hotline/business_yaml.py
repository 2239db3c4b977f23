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

Every field other than those marked optional or in `prompt` (all optional but `role`) is
required; unknown fields are refused, so a typo never goes unnoticed. Numbers must be quoted:
YAML reads an unquoted +972… as an integer.

`load_businesses_yaml` is pure (reads one file, touches no database) and raises
`InvalidBusiness` naming the file, the business and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hotline.business import BusinessConfig, TemplateConfig
from hotline.errors import InvalidBusiness
from hotline.store.validation import check_business

_BUSINESS_KEYS = {
    "slug", "name", "language", "voice", "greeting", "bot_speaks_first", "timezone",
    "numbers", "prompt", "templates",
}  # fmt: skip
_REQUIRED_BUSINESS_KEYS = ("slug", "name", "language", "voice", "greeting", "numbers", "prompt")
_PROMPT_KEYS = ("role", "tone", "greeting_rules", "knowledge", "policies", "faq")
_TEMPLATE_KEYS = ("name", "greeting", "instructions")


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
        entry["templates"] = [
            {"name": t.name, "greeting": t.greeting_template, "instructions": t.instructions}
            for t in business.templates
        ]
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
        if isinstance(number, int):
            raise InvalidBusiness(
                f'numbers[{i}]: put the number in quotes, e.g. "+{number}" '
                "(YAML reads an unquoted +… as an integer)"
            )
        _string(number, f"numbers[{i}]")
    templates = fields.get("templates") or []
    if not isinstance(templates, list):
        raise InvalidBusiness("templates: expected a list of templates")
    bot_speaks_first = fields.get("bot_speaks_first", True)
    if not isinstance(bot_speaks_first, bool):
        raise InvalidBusiness(f"bot_speaks_first: expected true or false, not {bot_speaks_first!r}")
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
    )


def _template(entry: object, index: int) -> TemplateConfig:
    where = f"templates[{index}]."
    fields = _mapping(entry, where, set(_TEMPLATE_KEYS), ("name", "greeting"))
    return TemplateConfig(
        name=_string(fields["name"], where + "name"),
        greeting_template=_string(fields["greeting"], where + "greeting"),
        instructions=_string(fields.get("instructions", ""), where + "instructions"),
    )


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
class _BlockDumper(yaml.SafeDumper):
    """Multi-line text as `|` blocks, so exported prompts read like the files people write."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)
