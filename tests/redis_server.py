"""A private redis-server for tests that stop it (never the machine's shared Redis):
started on a free port, no persistence; a missing binary skips locally, fails in CI."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import redis.asyncio as aioredis

from tests.server_process import free_port
from tests.services import unavailable

START_TIMEOUT_S = 10.0


class PrivateRedis:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start (again, on the same port: a Redis that comes back)."""
        self._spawn()
        client = aioredis.Redis.from_url(self.url)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while True:
                    try:
                        await client.ping()
                        return
                    except (aioredis.RedisError, OSError):
                        await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def _spawn(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server", "not installed")
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.work_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        """A real fault: the server process is killed, its clients' sockets close."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)
