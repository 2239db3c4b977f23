"""`build_outbound_plan` and the greeting timing: a template's own overrides the business's."""

from __future__ import annotations

import orjson
import pytest

from hotline.business import BusinessConfig, GreetingTiming, TemplateConfig
from hotline.plan import CallPlan, build_outbound_plan
from hotline.settings import Settings
from tests.factories import TEST_NUMBER, make_business

IMMEDIATE, AFTER_AMD = GreetingTiming.IMMEDIATE, GreetingTiming.AFTER_AMD


def outbound(business: BusinessConfig, *, amd: bool = True) -> CallPlan:
    return build_outbound_plan(Settings(amd=amd), business, template_name="reminder",
                               variables={"name": "Dana"}, from_number=TEST_NUMBER,
                               to_number="+15550002222", created_epoch_ms=0.0)


def timed(business_timing: GreetingTiming,
          template_timing: GreetingTiming | None) -> BusinessConfig:
    template = TemplateConfig("reminder", "Hi {name}, this is Acme Dental calling.",
                              greeting_timing=template_timing)
    return make_business(greeting_timing=business_timing, templates=(template,))


@pytest.mark.parametrize(
    ("business_timing", "template_timing", "expected"),
    [
        (IMMEDIATE, None, IMMEDIATE),  # the defaults
        (AFTER_AMD, None, AFTER_AMD),  # no override: the business's
        (IMMEDIATE, AFTER_AMD, AFTER_AMD),  # the template's wins…
        (AFTER_AMD, IMMEDIATE, IMMEDIATE),  # …also when it is the default value
    ],
)
def test_the_templates_greeting_timing_overrides_the_businesss(
    business_timing: GreetingTiming, template_timing: GreetingTiming | None,
    expected: GreetingTiming,
) -> None:
    plan = outbound(timed(business_timing, template_timing))
    assert plan.greeting_timing is expected
    assert plan.greets_after_amd is (expected is AFTER_AMD)


def test_without_amd_nothing_waits_for_a_verdict() -> None:
    plan = outbound(timed(IMMEDIATE, AFTER_AMD), amd=False)
    assert plan.greeting_timing is AFTER_AMD and not plan.greets_after_amd


def test_the_plans_greeting_timing_survives_its_json_form() -> None:
    # As the registry keeps a pending outbound plan: to_dict, JSON, from_dict.
    plan = outbound(timed(IMMEDIATE, AFTER_AMD))
    again = CallPlan.from_dict(orjson.loads(orjson.dumps(plan.to_dict())))
    assert again == plan and again.greeting_timing is AFTER_AMD and again.greets_after_amd
