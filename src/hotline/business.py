"""What a business is, as the call path sees it: plain frozen values, no database rows.

The store maps its rows to these; the config cache holds them in memory so that the voice
webhook never waits for a query.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

# Built-in tools a business may enable (see hotline.tools). Order is the README's.
BUILTIN_TOOLS = ("end_call", "transfer_to_human", "take_message", "check_hours")
DEFAULT_TOOLS = ("end_call", "take_message", "check_hours")
# What a pressed key may do without asking the model.
DTMF_ACTIONS = ("transfer_to_human", "end_call")
DEFAULT_RECORDING_RETENTION_DAYS = 30


class GreetingTiming(enum.StrEnum):
    """When an outbound call's greeting starts, with answering-machine detection on."""

    IMMEDIATE = "immediate"  # at once; the AMD verdict may still cut it for a voicemail
    AFTER_AMD = "after_amd"  # held until the verdict (at most the AMD greeting cap)


@dataclass(frozen=True, slots=True)
class TemplateConfig:
    """An outbound call template: a greeting with {placeholders} and extra instructions."""

    name: str
    greeting_template: str
    instructions: str = ""
    # Left after the beep when an answering machine picks up ({placeholders} as above);
    # empty: hang up without a message.
    voicemail_template: str = ""
    greeting_timing: GreetingTiming | None = None  # None: the business's
    id: int | None = None


@dataclass(frozen=True, slots=True)
class HttpTool:
    """A business's own tool: Hotline POSTs the model's arguments to `url` (signed) and
    hands the JSON reply back to the model."""

    name: str
    description: str
    url: str
    parameters: dict[str, Any]  # JSON schema of the arguments (an object schema)
    timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class BusinessConfig:
    slug: str
    name: str
    language: str  # "he", "en", …
    voice: str
    greeting: str
    # Compact prompt parts: enough to greet well.
    role: str
    tone: str
    greeting_rules: str
    # Full prompt parts: everything the agent needs for the rest of the call.
    knowledge: str
    policies: str
    faq: str
    phone_numbers: tuple[str, ...]
    bot_speaks_first: bool = True
    timezone: str = "UTC"
    templates: tuple[TemplateConfig, ...] = field(default=())
    # Call control. Built-in tools the agent may use (names from BUILTIN_TOOLS).
    tools: tuple[str, ...] = DEFAULT_TOOLS
    # E.164 number `transfer_to_human` (and a DTMF "transfer_to_human") dials.
    transfer_number: str | None = None
    # (weekday, "HH:MM-HH:MM[,HH:MM-HH:MM]") in `timezone`; a day not listed is closed.
    opening_hours: tuple[tuple[str, str], ...] = ()
    # (digit, action from DTMF_ACTIONS): what a pressed key does without the model.
    dtmf_actions: tuple[tuple[str, str], ...] = ()
    max_call_duration_s: int = 600
    http_tools: tuple[HttpTool, ...] = ()
    greeting_timing: GreetingTiming = GreetingTiming.IMMEDIATE  # outbound, with AMD on
    # Both sides of each call kept as a WAV (off by default), deleted after this many days.
    recording: bool = False
    recording_retention_days: int = DEFAULT_RECORDING_RETENTION_DAYS
    id: int | None = None

    def template(self, name: str) -> TemplateConfig:
        for template in self.templates:
            if template.name == name:
                return template
        raise KeyError(f"business {self.slug!r} has no outbound template {name!r}")
