"""Property-based run over the API's own OpenAPI schema (schemathesis), with the admin key,
against the real app served by uvicorn on an ephemeral port: no request, valid or not, may
get a 5xx, and every answer must match the schema (status code, content type, body).

Bounded and derandomized (the same examples every run), so it is quick and never flaky; two
businesses with a call, a message and a template are there for the generated requests to
meet real rows now and then.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from hotline.core.record import LeadMessage
from tests.factories import make_business
from tests.stack import running_stack
from tests.test_api import call_with_messages
from tests.test_api_keys import ADMIN_TOKEN, KEY_SECRET, OTHER_NUMBER

pytestmark = pytest.mark.sockets

# Examples per operation, path and mode: ~40 x 2 x 6, about 400 requests (~10 s of CPU).
# HOTLINE_TEST_FUZZ_EXAMPLES=200 digs deeper (minutes; clean on both databases).
EXAMPLES = int(os.environ.get("HOTLINE_TEST_FUZZ_EXAMPLES", "6"))
SCHEMA_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
                 response_schema_conformance]


# Rows the fixture makes: a second pass fills the path with them, so that the generated
# queries and bodies reach real rows rather than 404s.
KNOWN_PATH = {"slug": "acme-dental", "name": "reminder", "call_sid": "CAacme",
              "message_id": "CAacme-1"}


def fuzz(base_url: str) -> list[str]:
    """Each operation of the schema, in both generation modes, with generated paths, then
    (but for deletions) with the known rows' paths; the failures, described."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json", timeout=10)
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20  # the whole API is there, not an empty schema
    passes = [(operation, None) for operation in operations] + [
        (operation, {name: KNOWN_PATH[name] for name in re.findall(r"{(\w+)}", operation.path)})
        for operation in operations if "{" in operation.path and operation.method != "delete"]
    for operation, path in passes:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                strategy = operation.as_strategy(mode, headers=auth, path_parameters=path)
                _run(strategy, base_url, auth)()
            except (AssertionError, FailureGroup) as exc:  # what the checks found
                failures.append(f"{operation.label} {path or ''} ({mode.value}): {exc}")
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise
                # Nothing of the request can be made invalid (the key is fixed): no cases.
    return failures


def _run(strategy: Any, base_url: str, auth: dict[str, str]) -> Callable[[], None]:
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, headers=auth, timeout=10)
        case.validate_response(response, checks=SCHEMA_CHECKS)

    return run


async def test_the_openapi_schema_holds_under_generated_requests(
        database_url: str, tmp_path: Path) -> None:
    # One business far west of UTC: its days at the edges of the dates are the hard case.
    businesses = [make_business(), make_business(slug="bolt-plumbing", name="Bolt Plumbing",
                                                 phone_numbers=(OTHER_NUMBER,),
                                                 timezone="America/Los_Angeles")]
    async with running_stack(database_url, tmp_path, businesses, api_token=ADMIN_TOKEN,
                             key_secret=KEY_SECRET) as stack:
        record = call_with_messages("CAacme", 0, "acme-dental")
        record.messages = [LeadMessage("Dana", "+15550001111", "call me", 1_000)]
        await stack.services.store.save_call(record)
        failures = await asyncio.to_thread(fuzz, stack.server.url)
    assert failures == [], "\n\n".join(failures)  # each with its curl line to reproduce
