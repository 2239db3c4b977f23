"""Everything one running Hotline holds, built by the app's lifespan."""

from __future__ import annotations

import asyncio
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

AMD_SIGNAL = "amd"  # an answering-machine verdict (Twilio `AnsweredBy`)

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

    def __post_init__(self) -> None:
        self.metrics = CallMetrics(lambda: len(self.active_calls))
        self.readiness = Readiness(self)
        self.metrics.watch_recorder(self.recorder)
        self.metrics.watch_drain(lambda: self.drain.draining)

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
        if runner is not None and name == AMD_SIGNAL:
            runner.deliver(AmdVerdict(AnsweredBy.parse(value)))
