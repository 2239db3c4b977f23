"""A fleet on one machine: N `hotline serve` instances behind a private nginx, on one
store and one Redis (`hotline fleet up`, the fleet tests, `hotline bench fleet`).

Each instance gets its own port, id (`hotline-1`, …), data dir (its journal) and greeting
cache; all share HOTLINE_PUBLIC_URL (nginx's URL: Twilio signs over it). With
`pin_streams` (the default) each also gets HOTLINE_INSTANCE_URL, its own URL (its own
path through nginx when the public URL is another's: a tunnel, TLS in front), so a call's
media stream comes back to the instance that took its webhook (the warm engine session);
without it streams go through nginx to any instance (the cross-instance path).

The active health check: every `check_interval_s` each instance's /readyz is asked, and
nginx is reloaded with the instances that are not ready marked `down`. A rolling restart
(`restart`) marks the instance down first, then sends SIGTERM (the drain: its calls run to
their end), starts it again once it has exited, and waits for its /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from hotline.fleet.instance import Instance
from hotline.fleet.nginx import NginxProcess, Upstream, instance_path
from hotline.store.database import Store

log = logging.getLogger("hotline.fleet")

CHECK_INTERVAL_S = 0.5
EXIT_MARGIN_S = 60.0  # after the drain and the goodbyes: closing, the last records


@dataclass(frozen=True)
class FleetConfig:
    database_url: str
    redis_url: str
    work_dir: Path
    instances: int = 2
    host: str = "127.0.0.1"
    port: int = 0  # nginx's; 0: any free port
    instance_ports: tuple[int, ...] = ()  # empty: free ports
    public_url: str | None = None  # default: nginx's own URL
    pin_streams: bool = True
    check_interval_s: float = CHECK_INTERVAL_S
    drain_timeout_s: float = 300.0
    env: dict[str, str] = field(default_factory=dict)  # HOTLINE_* for every instance
    # Per instance (by index), on top of `env`.
    instance_env: tuple[dict[str, str], ...] = ()


def shared_database_url(url: str) -> str:
    """The store's URL as every instance must see it: each runs in its own directory, so
    a relative SQLite path (the default `./hotline.db`) is made absolute here."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not (
            parsed.database == ":memory:" or Path(parsed.database).is_absolute()):
        return parsed.set(database=str(Path(parsed.database).resolve())).render_as_string(
            hide_password=False)
    return url


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class Fleet:
    def __init__(self, config: FleetConfig) -> None:
        if config.instances < 1:
            raise ValueError("a fleet needs at least one instance")
        self.config = config
        self.database_url = shared_database_url(config.database_url)
        self.port = config.port or free_port(config.host)
        self.url = f"http://{config.host}:{self.port}"
        self.public_url = (config.public_url or self.url).rstrip("/")
        ports = list(config.instance_ports) or [free_port(config.host)
                                                for _ in range(config.instances)]
        self.instances = [self._instance(index, port) for index, port in enumerate(ports)]
        self.nginx = NginxProcess(config.work_dir / "nginx", f"{config.host}:{self.port}",
                                  pinned=tuple((i.instance_id, i.address)
                                               for i in self.instances))
        self._http = httpx.AsyncClient()
        self._held_down: set[str] = set()  # taken out by a restart, whatever /readyz says
        self._ready: dict[str, bool] = {}
        self._watcher: asyncio.Task[None] | None = None

    def _instance(self, index: int, port: int) -> Instance:
        config = self.config
        instance_id = f"hotline-{index + 1}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
        env.update({
            "HOTLINE_DATABASE_URL": self.database_url,
            "HOTLINE_REDIS_URL": config.redis_url,
            "HOTLINE_PUBLIC_URL": self.public_url,
            # A call reaching an instance while it drains goes back through nginx, to one
            # that serves (nginx stops sending it new calls at the next check).
            "HOTLINE_FAILOVER_URL": self.public_url + "/twilio/voice",
            "HOTLINE_DRAIN_TIMEOUT_S": str(config.drain_timeout_s),
        })
        if config.pin_streams:
            # A URL Twilio can reach: the instance's own address when nginx's URL is the
            # public one (all on this machine), else its path through nginx (behind a
            # tunnel or TLS, 127.0.0.1 would be no way in: every stream failed).
            env["HOTLINE_INSTANCE_URL"] = (
                f"http://{config.host}:{port}" if self.public_url == self.url
                else instance_path(instance_id))  # (a path: on the public URL)
        env.update(config.env)
        if index < len(config.instance_env):
            env.update(config.instance_env[index])
        return Instance(instance_id, config.host, port,
                        config.work_dir / instance_id, env)

    def instance(self, instance_id: str) -> Instance:
        return next(i for i in self.instances if i.instance_id == instance_id)

    async def start(self) -> None:
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        # Migrated once, before the instances (each would, at once, on a fresh store).
        store = Store(self.database_url)
        try:
            await store.upgrade()
        finally:
            await store.close()
        try:
            for instance in self.instances:
                await instance.start()
            await asyncio.gather(*(i.wait_ready(self._http) for i in self.instances))
            self._ready = {i.instance_id: True for i in self.instances}
            await self.nginx.start(self._upstreams())
        except BaseException:
            await self._kill_all()
            raise
        self._watcher = asyncio.create_task(self._watch(), name="fleet-readiness")
        log.info("fleet up: %s -> %s", self.url, ", ".join(i.url for i in self.instances))

    def _upstreams(self) -> list[Upstream]:
        return [Upstream(i.address, down=(i.instance_id in self._held_down
                                          or not self._ready.get(i.instance_id, False)))
                for i in self.instances]

    async def check(self) -> None:
        """Ask every instance's /readyz; reload nginx if the set of ready ones changed."""
        answers = await asyncio.gather(*(i.ready(self._http) for i in self.instances))
        ready = {i.instance_id: ok for i, ok in zip(self.instances, answers, strict=True)}
        if ready != self._ready:
            changed = sorted(k for k in ready if ready[k] != self._ready.get(k))
            self._ready = ready
            log.info("readiness changed (%s): nginx reloaded", ", ".join(
                f"{k} {'ready' if ready[k] else 'not ready'}" for k in changed))
            self.nginx.reload(self._upstreams())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval_s)
            try:
                await self.check()
            except Exception:  # the check loop's top level: keep checking
                log.exception("readiness check failed")

    async def restart(self, instance_id: str) -> None:
        """Out of nginx, SIGTERM (the drain), started again, ready, back in nginx."""
        instance = self.instance(instance_id)
        self._held_down.add(instance_id)
        self.nginx.reload(self._upstreams())
        instance.terminate()
        await instance.wait_exit(self.config.drain_timeout_s + EXIT_MARGIN_S)
        await instance.start()
        await instance.wait_ready(self._http)
        self._held_down.discard(instance_id)
        self._ready[instance_id] = True
        self.nginx.reload(self._upstreams())

    async def rolling_restart(self) -> None:
        for instance in self.instances:
            await self.restart(instance.instance_id)

    async def stop(self) -> None:
        """Every instance drains and exits (SIGTERM), then nginx stops."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        for instance in self.instances:
            instance.terminate()
        results = await asyncio.gather(
            *(i.wait_exit(self.config.drain_timeout_s + EXIT_MARGIN_S)
              for i in self.instances if i.process is not None), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("an instance did not stop in time: %r", result)
        await self._kill_all()
        await self._http.aclose()

    async def _kill_all(self) -> None:
        for instance in self.instances:
            await instance.kill()
        await self.nginx.stop()
