"""Logging set-up and the per-call logger that puts the CallSid on every line."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every message with the call's SID (bound once per call, as websockets does
    with its connection logger)."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        assert self.extra is not None  # always given: call_log and the toolbox pass the SID
        return f"[{self.extra['call_sid']}] {msg}", kwargs


def call_log(call_sid: str) -> CallLog:
    return CallLog(logging.getLogger("hotline.call"), {"call_sid": call_sid})


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # The SDKs log request details at DEBUG only; keep their INFO chatter out of call logs.
    for noisy in ("httpx", "websockets", "openai", "twilio.http_client"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
