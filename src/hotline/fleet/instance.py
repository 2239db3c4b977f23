"""One `hotline serve` of a fleet, as a child process with its own port, id, data dir and
log file; started, asked whether it is ready, stopped by SIGTERM (the drain)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hotline.errors import HotlineError

START_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 1.0


class InstanceError(HotlineError):
    """An instance did not start, or did not become ready."""


@dataclass
class Instance:
    instance_id: str
    host: str
    port: int
    work_dir: Path
    # HOTLINE_* (secrets among them: not in its repr) and the rest of its environment.
    env: dict[str, str] = field(repr=False)
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "serve.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "HOTLINE_HOST": self.host, "HOTLINE_PORT": str(self.port),
               "HOTLINE_INSTANCE_ID": self.instance_id,
               "HOTLINE_DATA_DIR": str(self.work_dir / "data"),
               "HOTLINE_GREETING_CACHE_DIR": str(self.work_dir / "greetings")}
        with self.log_path.open("ab") as log:
            # Its own session: a Ctrl-C in the terminal reaches the fleet, which stops the
            # instances itself (one SIGTERM each: the drain), not twice.
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from hotline.cli import main; main()", "serve",
                cwd=self.work_dir, env=env, stdout=log, stderr=log, start_new_session=True)
        self.starts += 1

    async def ready(self, http: httpx.AsyncClient) -> bool:
        """Its /readyz answers 200 (draining, starting or gone: False)."""
        if not self.running:
            return False
        try:
            response = await http.get(f"{self.url}/readyz", timeout=PROBE_TIMEOUT_S)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def wait_ready(self, http: httpx.AsyncClient,
                         timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.returncode is not None:
                raise InstanceError(f"{self.instance_id} exited ({self.process.returncode}) "
                                    f"at start:\n{self.log_tail()}")
            if await self.ready(http):
                return
            await asyncio.sleep(0.05)
        raise InstanceError(f"{self.instance_id} not ready after {timeout_s:.0f} s:\n"
                            f"{self.log_tail()}")

    def terminate(self) -> None:
        """SIGTERM: it drains (its calls run to their end), then exits."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout_s: float) -> int:
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout_s)
        self.exit_codes.append(code)
        return code

    async def kill(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.kill()
            await self.process.wait()

    def log_tail(self, chars: int = 3000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
