"""The Hotline server under test, in the benchmark's process: its settings for a strategy,
waiting for its greeting cache, and what it does besides answering calls that the report
names (full garbage collections, logged errors)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotline.benchmarks.strategies import Strategy, missing_settings
from hotline.benchmarks.tenants import ACCOUNT_SID, AUTH_TOKEN, OPENAI_KEY, outbound_texts
from hotline.business import BusinessConfig
from hotline.server import RunningServer
from hotline.settings import Settings


def server_settings(strategy: Strategy, *, workdir: Path, database_url: str,
                    engine_url: str, twilio_api_url: str | None = None) -> Settings:
    missing = missing_settings(strategy)
    if missing:
        raise RuntimeError(f"this Hotline has no setting {', '.join(missing)}: strategy "
                           f"{strategy.name!r} cannot be configured")
    values: dict[str, Any] = {
        "database_url": database_url, "openai_api_key": OPENAI_KEY,
        "openai_realtime_url": engine_url, "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN, "journal_path": str(workdir / "journal.jsonl"),
        "api_token": None, "redis_url": None, "log_level": "WARNING",
        **strategy.settings(),
    }
    values["greeting_cache_dir"] = str(workdir / "greeting-cache")
    if twilio_api_url is not None:  # outbound calls are placed through it
        values["twilio_api_url"] = twilio_api_url
    return Settings(_env_file=None, **values)


async def greetings_ready(server: RunningServer, businesses: Sequence[BusinessConfig],
                          timeout_s: float = 120, *, outbound: bool = False) -> int:
    """Until the server's greeting cache holds every lane's greeting (the server renders
    those when it starts) and, with `outbound`, its outbound template's greeting and
    voicemail (rendered here, as the server would on the first call that needs them).
    Returns how many greetings that is."""
    cache = server.services.greetings
    texts = [(b.greeting, b.voice) for b in businesses]
    extra = [(text, b.voice) for b in businesses for text in outbound_texts(b)
             if text] if outbound else []
    try:
        async with asyncio.timeout(timeout_s):  # outbound ones alongside the inbound ones
            await asyncio.gather(cache.wait_ready(list(businesses), timeout_s),
                                 *(cache.ensure(text, voice) for text, voice in extra))
    except TimeoutError:
        raise RuntimeError("the server's greeting cache was not ready in "
                           f"{timeout_s:.0f} s") from None
    return len(set(texts + extra))


@dataclass(frozen=True, slots=True)
class GcPause:
    """A full (generation 2) garbage collection in the server's process."""

    started_at: float  # time.monotonic()
    ms: float
    objects: int  # objects tracked by the collector afterwards

    def overlaps(self, start: float, end: float) -> bool:
        return self.started_at < end and self.started_at + self.ms / 1000 > start


class GcWatch:
    """Records full collections while installed (`with GcWatch() as watch`): the event
    loop, and every call on it, stops while one runs."""

    def __init__(self) -> None:
        self.pauses: list[GcPause] = []
        self._started = 0.0

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.monotonic()
        else:
            self.pauses.append(GcPause(self._started, (time.monotonic() - self._started) * 1000,
                                       len(gc.get_objects())))


_CALL_SID = re.compile(r"CA[0-9a-f]{32}")


class ErrorLog(logging.Handler):
    """Collects ERROR records (the server's failures while the benchmark runs), each
    summarised as logger: message: exception type, and where in Hotline it was raised."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.summaries: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = _CALL_SID.sub("CA…", " ".join(record.getMessage().split()))
        summary = f"{record.name}: {message}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            frames = traceback.extract_tb(record.exc_info[2])
            ours = [f for f in frames if f"{os.sep}hotline{os.sep}" in f.filename]
            summary += f" ({type(exc).__name__}"
            if ours:
                summary += f" from {Path(ours[-1].filename).name}:{ours[-1].lineno} {ours[-1].name}"
            summary += ")"
        self.summaries.append(summary)
