"""The whole product over real sockets: uvicorn on an ephemeral port, the simulated Twilio
(phone + REST API) and the simulated realtime engine, all on this machine.

Calls run on compressed time: the server (`clock_speed`) and the simulators (`SimClock`)
share `TEST_CLOCK`, `HOTLINE_TEST_CLOCK_SPEED` times faster than the wall clock (default
5; 1 runs the calls at real time). Every time a test compares is on that clock.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event

from hotline.business import BusinessConfig
from hotline.server import RunningServer, start_server
from hotline.services import Services
from hotline.settings import Settings
from hotline.sim.clock import SimClock
from hotline.sim.engine import EngineSimulator, LatencyProfile
from hotline.sim.phone import SimulatedPhone
from hotline.sim.twilio_api import TwilioApiSimulator
from hotline.store.database import Store

ACCOUNT_SID = "AC" + "7" * 32
AUTH_TOKEN = "e2e-auth-token"
OPENAI_KEY = "sk-e2e"
TEST_CLOCK = SimClock(float(os.environ.get("HOTLINE_TEST_CLOCK_SPEED", "5")))


@dataclass
class Stack:
    server: RunningServer
    engine: EngineSimulator
    twilio: TwilioApiSimulator
    phone: SimulatedPhone
    # (TEST_CLOCK time, SQL) of every statement the server's store ran.
    statements: list[tuple[float, str]] = field(default_factory=list)

    @property
    def services(self) -> Services:
        return self.server.services

    def statements_between(self, start: float, end: float) -> list[str]:
        return [sql for at, sql in self.statements if start <= at <= end]


async def seeded_store(database_url: str, businesses: Iterable[BusinessConfig]) -> Store:
    """The store at the latest revision with these businesses saved (open: close it)."""
    store = Store(database_url)
    await store.upgrade()
    for business in businesses:
        await store.save_business(business)
    return store


async def started_simulators(profile: LatencyProfile | None,
                             clock: SimClock) -> tuple[EngineSimulator, TwilioApiSimulator]:
    """The simulated engine and Twilio REST API, listening (stop both at the end)."""
    engine = EngineSimulator(profile or LatencyProfile.zero(), api_key=OPENAI_KEY, clock=clock)
    await engine.start()
    twilio = TwilioApiSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, ring_ms=100,
                                clock=clock)
    await twilio.start()
    return engine, twilio


@asynccontextmanager
async def running_stack(database_url: str, tmp_path: Path, businesses: Iterable[BusinessConfig],
                        *, profile: LatencyProfile | None = None,
                        clock: SimClock = TEST_CLOCK, **settings: Any) -> AsyncIterator[Stack]:
    await (await seeded_store(database_url, businesses)).close()
    engine, twilio = await started_simulators(profile, clock)
    server: RunningServer | None = None
    try:
        # (A test may point the server elsewhere: an engine that is down, say.)
        defaults: dict[str, Any] = {"openai_realtime_url": engine.url,
                                    "data_dir": str(tmp_path / "data")}
        server = await start_server(Settings(
            database_url=database_url, openai_api_key=OPENAI_KEY,
            twilio_api_url=twilio.url,
            twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN,
            journal_path=str(tmp_path / "journal.jsonl"),
            greeting_cache_dir=str(tmp_path / "greetings"), clock_speed=clock.speed,
            **{**defaults, **settings}))
        # The phone's own (inbound) calls are known to the REST API too: the server hangs
        # them up and transfers them through it.
        stack = Stack(server, engine, twilio, twilio.attach_phone(
            SimulatedPhone(server_url=server.url, auth_token=AUTH_TOKEN,
                           account_sid=ACCOUNT_SID, clock=clock)))

        def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            stack.statements.append((clock.now(), statement))

        event.listen(server.services.store.engine.sync_engine, "before_cursor_execute", count)
        yield stack
    finally:
        if server is not None:
            await server.stop()
        await twilio.stop()
        await engine.stop()
