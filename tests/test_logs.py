"""Log lines: JSON objects with the call's fields, and no secret in any line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from pydantic import SecretStr

from hotline.logs import (
    REDACTED,
    JsonFormatter,
    RedactSecrets,
    call_log,
    configured_secrets,
)
from hotline.settings import Settings

SETTINGS = Settings(
    _env_file=None,  # type: ignore[call-arg]
    twilio_auth_token=SecretStr("tw-auth-0123456789abcdef"),
    openai_api_key=SecretStr("sk-proj-SECRETSECRETSECRET"),
    api_token=SecretStr("api-token-9876543210"),
    tool_signing_secret=SecretStr("tool-signing-key-abcdef"),
    database_url="postgresql+asyncpg://hotline:db-password-xyz@db.internal/hotline",
    redis_url="redis://:redis-password-qrs@cache.internal:6379/0",
)
SECRETS = ["tw-auth-0123456789abcdef", "sk-proj-SECRETSECRETSECRET", "api-token-9876543210",
           "tool-signing-key-abcdef", "db-password-xyz", "redis-password-qrs"]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Hotline's JSON handler, with the settings' secrets redacted, on the `hotline` logger."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets(configured_secrets(SETTINGS)))
    logger = logging.getLogger("hotline")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_every_configured_secret_is_known() -> None:
    assert sorted(configured_secrets(SETTINGS)) == sorted(SECRETS)


def test_a_call_line_is_one_json_object_with_its_sid_and_business(
        captured: io.StringIO) -> None:
    log = call_log("CA" + "a" * 32, "acme-dental")
    log.info("stage %s at %d ms", "greeting_done", 412)
    logging.getLogger("hotline.webhooks").warning("plain line")
    [call_line, plain] = lines(captured)
    assert call_line["call_sid"] == "CA" + "a" * 32 and call_line["business"] == "acme-dental"
    assert call_line["message"] == "stage greeting_done at 412 ms"  # the SID is a field
    assert call_line["level"] == "INFO" and call_line["logger"] == "hotline.call"
    assert str(call_line["time"]).endswith("+00:00")
    assert plain["message"] == "plain line" and "call_sid" not in plain


def test_secrets_never_reach_the_output(captured: io.StringIO) -> None:
    log = logging.getLogger("hotline.test")
    for secret in SECRETS:
        log.info("in the message: %s", secret)
        log.info(f"formatted in already: token={secret}")
        log.info("in the extra", extra={"detail": f"Bearer {secret}"})
        try:
            raise RuntimeError(f"connection to https://user:{secret}@host failed")
        except RuntimeError:
            log.exception("in the traceback")
    call_log("CA" + "b" * 32, "acme").error("url %s", SETTINGS.database_url)
    text = captured.getvalue()
    for secret in SECRETS:
        assert secret not in text
    assert text.count(REDACTED) >= 4 * len(SECRETS) + 1
    assert all(isinstance(line, dict) for line in lines(captured))


def test_short_or_empty_values_are_not_secrets_to_redact() -> None:
    redact = RedactSecrets(["", "abc", "a-long-secret"])
    assert redact.redact("abc and a-long-secret") == f"abc and {REDACTED}"
