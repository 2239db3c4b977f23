"""Everything one running Hotline holds, built by the app's lifespan."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from hotline.call.recorder import CallRecorder
from hotline.config_cache import ConfigCache
from hotline.core.amd import AnsweredBy
from hotline.core.events import AmdVerdict
from hotline.drain import Drain
from hotline.engine.openai_realtime import RealtimeEngine
from hotline.engine.warm import WarmSessions
from hotline.greetings import GreetingCache
from hotline.metrics import CallMetrics
from hotline.readiness import Readiness
from hotline.registry import CallRegistry
from hotline.settings import Settings
from hotline.telephony.signature import SignatureChecker

log = logging.getLogger("hotline.fleet")


class Signal(enum.StrEnum):
    """What instances tell each other about a call (or the config) through the registry."""

    AMD = "amd"  # an answering-machine verdict (Twilio `AnsweredBy`), for the call's runner
    # Another instance took the call's stream (value: its instance id): a warm session
    # prepared here will never be claimed, and the drain need not wait for that stream.
    STREAM_CLAIMED = "stream_claimed"
    CALL_ENDED = "call_ended"  # a final status callback, wherever Twilio sent it
    CONFIG = "config"  # a business changed (value: the new config version)
    GREETING = "greeting"  # greeting audio rendered and shared (value: its cache key)


AMD_SIGNAL = Signal.AMD

if TYPE_CHECKING:
    from hotline.call.runner import CallRunner
    from hotline.core.record import CallRecord
    from hotline.store.database import Store
    from hotline.telephony.call_control import CallControl
    from hotline.telephony.outbound import OutboundDialer


@dataclass
class Services:
    settings: Settings
    store: Store
    config: ConfigCache
    registry: CallRegistry
    recorder: CallRecorder
    engine: RealtimeEngine
    dialer: OutboundDialer
    signatures: SignatureChecker
    warm: WarmSessions
    greetings: GreetingCache
    control: CallControl
    tools_http: httpx.AsyncClient  # HTTP tools' requests
    active_calls: dict[str, CallRunner] = field(default_factory=dict)
    metrics: CallMetrics = field(init=False)
    # Shutting down (SIGTERM): no new calls here; see hotline.drain.
    drain: Drain = field(default_factory=Drain)
    readiness: Readiness = field(init=False)
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.metrics = CallMetrics(lambda: len(self.active_calls))
        self.readiness = Readiness(self)
        self.metrics.watch_recorder(self.recorder)
        self.metrics.watch_drain(lambda: self.drain.draining)
        self.metrics.watch_registry(lambda: self.registry.shared,
                                    self.settings.redis_url is not None)

    @property
    def instance(self) -> str:
        """This instance's id (HOTLINE_INSTANCE_ID, default hostname:port)."""
        return self.settings.instance_name

    def in_background(self, work: Coroutine[None, None, None], name: str) -> None:
        """Fire and forget, off any call's path; kept referenced until done, failures
        logged."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s failed: %r", task.get_name(), task.exception())

    async def stop_background(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def announce(self, call_sid: str, signal: Signal, value: str) -> None:
        """Tell every other instance, in the background (nobody waits for Redis)."""
        self.in_background(self.registry.publish(call_sid, signal, value),
                           name=f"announce-{signal}")

    async def final_record(self, call_sid: str, timeout_s: float = 30.0) -> CallRecord:
        """The call's stored record once it is over here and written (its outcome known):
        for the demo and the tests, which follow a call to its end from outside."""
        async with asyncio.timeout(timeout_s):
            while True:
                if call_sid not in self.active_calls:
                    await self.recorder.flush(timeout_s)
                    record = await self.store.get_call(call_sid)
                    if record is not None and record.outcome:
                        return record
                await asyncio.sleep(0.01)

    def hear_signal(self, call_sid: str, name: str, value: str) -> None:
        """A signal for a call (any instance may have received it): to the call, if it runs
        here. One whose stream has not started yet is taken from the registry at start."""
        runner = self.active_calls.get(call_sid)
        if name == Signal.AMD:
            if runner is not None:
                runner.deliver(AmdVerdict(AnsweredBy.parse(value)))
        elif name == Signal.STREAM_CLAIMED and value != self.instance:
            self._forget_call(call_sid, f"its stream went to {value}")
        elif name == Signal.CALL_ENDED and runner is None:
            self._forget_call(call_sid, "it ended")
        elif name == Signal.CONFIG:
            self.in_background(self._refresh_config(value), name="config-announced")
        elif name == Signal.GREETING:
            self.greetings.fetch_soon(value)

    def _forget_call(self, call_sid: str, why: str) -> None:
        """A call this instance took the webhook of, but will not run: its warm session
        closes now (not at its expiry), and the drain stops waiting for its stream."""
        self.drain.stream_arrived(call_sid)
        if self.warm.has(call_sid):
            log.info("warm session for %s closed: %s", call_sid, why)
            self.in_background(self.warm.discard(call_sid), name=f"warm-discard-{call_sid}")

    async def _refresh_config(self, version: str) -> None:
        if await self.config.refresh():
            log.info("config reloaded at once: another instance changed it (version %s)",
                     version)
