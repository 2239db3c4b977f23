"""Logging set-up: text or JSON lines, secrets redacted, and the per-call logger that puts
the CallSid and the business on every line of a call."""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import orjson

if TYPE_CHECKING:
    from hotline.settings import Settings

LogFormat = Literal["text", "json"]
REDACTED = "[REDACTED]"
# Shorter values are no secret worth the name, and redacting them would garble lines.
MIN_SECRET_CHARS = 6
CALL_FIELDS = ("call_sid", "business")  # what CallLog binds, as `extra`
# LogRecord's own attributes: anything else on a record came through `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime"}
_NOT_LOGGED = frozenset({"color_message"})  # uvicorn's copy of its message, with ANSI colours


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """A call's logger, bound once per call as websockets does with its connection logger:
    every message starts with the call's SID, and the SID and the business go on every
    record as fields (`extra`), which the JSON format shows as keys of their own."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        assert self.extra is not None  # always given: call_log and the toolbox pass the SID
        kwargs["extra"] = {**self.extra, **kwargs.get("extra", {})}
        return f"[{self.extra['call_sid']}] {msg}", kwargs


def call_log(call_sid: str, business: str = "") -> CallLog:
    return CallLog(logging.getLogger("hotline.call"), {"call_sid": call_sid,
                                                        "business": business})


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the call's
    fields and any other `extra`, and `exception` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _without_call_prefix(record),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in _NOT_LOGGED and not key.startswith("_"):
                line[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def _without_call_prefix(record: logging.LogRecord) -> str:
    """The message without CallLog's `[CA…] ` (the JSON line has `call_sid` for that)."""
    message = record.getMessage()
    prefix = f"[{getattr(record, 'call_sid', '')}] "
    return message.removeprefix(prefix) if len(prefix) > 3 else message


class RedactSecrets(logging.Filter):
    """Replaces every configured secret in a record (its message, arguments, exception
    text and `extra` strings) with `[REDACTED]`. On the handler, so that it sees the records
    of every logger, the SDKs' and uvicorn's included."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first: a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS},
                               key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret in the settings: the Twilio auth token, the OpenAI key, the API token,
    the tool signing secret, the API keys' secret, and the passwords in the store's and
    Redis's URLs."""
    values = [settings.twilio_auth_token, settings.openai_api_key, settings.api_token,
              settings.tool_signing_secret, settings.key_secret]
    secrets = [value.get_secret_value() for value in values if value is not None]
    for url in (settings.database_url, settings.redis_url):
        password = urlsplit(url).password if url else None
        if password:
            secrets.append(password)
    return secrets


def configure_logging(level: str = "INFO", log_format: LogFormat = "text",
                      secrets: Iterable[str] = ()) -> None:
    """The root logger's one handler (stderr), in `log_format`, with `secrets` redacted."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The SDKs log request details at DEBUG only; keep their INFO chatter out of call logs.
    for noisy in ("httpx", "websockets", "openai", "twilio.http_client"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
