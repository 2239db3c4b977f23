"""Small builders shared by the tests: a business, a plan."""

from __future__ import annotations

import dataclasses

from hotline.business import BusinessConfig, TemplateConfig
from hotline.plan import CallPlan, build_inbound_plan, build_outbound_plan
from hotline.settings import Settings

TEST_NUMBER = "+15005550006"


def make_business(**overrides: object) -> BusinessConfig:
    values: dict[str, object] = {
        "slug": "acme-dental",
        "name": "Acme Dental",
        "language": "en",
        "voice": "marin",
        "greeting": "Hi, Acme Dental, how can I help?",
        "role": "You are the receptionist of Acme Dental, a family dental clinic.",
        "tone": "warm, brief, one question at a time",
        "greeting_rules": "Say the greeting once, then listen.",
        "knowledge": "We are open Sunday to Thursday, 8:00-18:00. " * 20,
        "policies": "Never give medical advice. Cancellations need 24 hours notice. " * 10,
        "faq": "Q: Do you take insurance? A: Yes, most plans. " * 10,
        "phone_numbers": (TEST_NUMBER,),
        "bot_speaks_first": True,
        "timezone": "UTC",
        "templates": (TemplateConfig("reminder", "Hi {name}, this is Acme Dental calling.",
                                     "Remind {name} of tomorrow's appointment."),),
    }
    values.update(overrides)
    return BusinessConfig(**values)  # type: ignore[arg-type]


def make_plan(**overrides: object) -> CallPlan:
    settings = Settings(warmup_ms=800, echo_cooldown_ms=400)
    plan = build_inbound_plan(settings, make_business(), call_sid="CA" + "1" * 32,
                              from_number="+15550001111", to_number=TEST_NUMBER,
                              webhook_received_epoch_ms=0.0)
    return dataclasses.replace(plan, **overrides)  # type: ignore[arg-type]


def make_outbound_plan(name: str = "Dana") -> CallPlan:
    return build_outbound_plan(Settings(), make_business(), template_name="reminder",
                               variables={"name": name}, from_number=TEST_NUMBER,
                               to_number="+15550002222", created_epoch_ms=0.0)
