"""The whole product over real sockets: uvicorn on an ephemeral port, the simulated Twilio
(phone + REST API) and the simulated realtime engine, all on this machine."""

from __future__ import annotations

import time
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
from hotline.sim.engine import EngineSimulator, LatencyProfile
from hotline.sim.phone import SimulatedPhone
from hotline.sim.twilio_api import TwilioApiSimulator
from hotline.store.database import Store

ACCOUNT_SID = "AC" + "7" * 32
AUTH_TOKEN = "e2e-auth-token"
OPENAI_KEY = "sk-e2e"


@dataclass
class Stack:
    server: RunningServer
    engine: EngineSimulator
    twilio: TwilioApiSimulator
    phone: SimulatedPhone
    # (time.monotonic(), SQL) of every statement the server's store ran.
    statements: list[tuple[float, str]] = field(default_factory=list)

    @property
    def services(self) -> Services:
        return self.server.services

    def statements_between(self, start: float, end: float) -> list[str]:
        return [sql for at, sql in self.statements if start <= at <= end]


@asynccontextmanager
async def running_stack(database_url: str, tmp_path: Path, businesses: Iterable[BusinessConfig],
                        *, profile: LatencyProfile | None = None,
                        **settings: Any) -> AsyncIterator[Stack]:
    seed = Store(database_url)
    await seed.upgrade()
    for business in businesses:
        await seed.save_business(business)
    await seed.close()
    engine = EngineSimulator(profile or LatencyProfile.zero(), api_key=OPENAI_KEY)
    await engine.start()
    twilio = TwilioApiSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, ring_ms=100)
    await twilio.start()
    server: RunningServer | None = None
    try:
        server = await start_server(Settings(
            database_url=database_url, openai_api_key=OPENAI_KEY,
            openai_realtime_url=engine.url, twilio_api_url=twilio.url,
            twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN,
            spool_path=str(tmp_path / "spool.jsonl"),
            greeting_cache_dir=str(tmp_path / "greetings"), **settings))
        # The phone's own (inbound) calls are known to the REST API too: the server hangs
        # them up and transfers them through it.
        stack = Stack(server, engine, twilio, twilio.attach_phone(
            SimulatedPhone(server_url=server.url, auth_token=AUTH_TOKEN,
                           account_sid=ACCOUNT_SID)))

        def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            stack.statements.append((time.monotonic(), statement))

        event.listen(server.services.store.engine.sync_engine, "before_cursor_execute", count)
        yield stack
    finally:
        if server is not None:
            await server.stop()
        await twilio.stop()
        await engine.stop()
