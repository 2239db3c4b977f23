"""Checks a business or template definition once, where it enters: CLI, YAML, admin, store.

Each check returns the value normalised (phone numbers without separators, text stripped)
or raises `InvalidBusiness` naming the field, so callers can prefix the file and business.
"""

from __future__ import annotations

import re
import string
import zoneinfo
from dataclasses import replace

from hotline.business import BusinessConfig, TemplateConfig
from hotline.errors import InvalidBusiness

SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
TEMPLATE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# ISO 639 language, optionally a region: "he", "en", "en-US", "yue".
LANGUAGE_RE = re.compile(r"[a-z]{2,3}(-[A-Z]{2})?")
VOICE_RE = re.compile(r"[a-z0-9_-]{1,32}")
# E.164: a plus sign and 8 to 15 digits, the first not zero.
E164_RE = re.compile(r"\+[1-9][0-9]{7,14}")
# What people type inside a number and E.164 leaves out.
_NUMBER_SEPARATORS = str.maketrans("", "", " -().")


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


def check_template(template: TemplateConfig) -> TemplateConfig:
    if not TEMPLATE_NAME_RE.fullmatch(template.name):
        raise InvalidBusiness(
            f"templates.name: {template.name!r} must be letters, digits, '-' or '_' (at most 64)"
        )
    field = f"templates[{template.name}]"
    greeting = _text(f"{field}.greeting", template.greeting_template, required=True)
    check_greeting_template(greeting, f"{field}.greeting")
    return replace(
        template,
        greeting_template=greeting,
        instructions=_text(f"{field}.instructions", template.instructions, required=False),
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
        zoneinfo.ZoneInfo(business.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidBusiness(
            f"timezone: {business.timezone!r} is not an IANA time zone such as 'Asia/Jerusalem'"
        ) from None
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
    return replace(
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
    )
