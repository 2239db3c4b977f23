"""What a business is, as the call path sees it: plain frozen values, no database rows.

The store maps its rows to these; the config cache holds them in memory so that the voice
webhook never waits for a query.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TemplateConfig:
    """An outbound call template: a greeting with {placeholders} and extra instructions."""

    name: str
    greeting_template: str
    instructions: str = ""
    id: int | None = None


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
    id: int | None = None

    def template(self, name: str) -> TemplateConfig:
        for template in self.templates:
            if template.name == name:
                return template
        raise KeyError(f"business {self.slug!r} has no outbound template {name!r}")
