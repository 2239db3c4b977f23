"""nginx for a fleet: its config rendered from the shipped template (pure), and a private
nginx process (its own prefix, pid file and logs in a work dir; never the system's
service), reloaded when the set of ready instances changes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from hotline.errors import HotlineError

STOP_TIMEOUT_S = 10.0
START_TIMEOUT_S = 10.0


class NginxError(HotlineError):
    """nginx is missing, or refused its config."""


@dataclass(frozen=True, slots=True)
class Upstream:
    address: str  # host:port
    down: bool = False  # not ready (the active check): nginx sends it nothing new


def template() -> str:
    return files("hotline.fleet").joinpath("nginx.conf.template").read_text(encoding="utf-8")


def instance_path(instance_id: str) -> str:
    """The path prefix nginx sends to this instance alone (its HOTLINE_INSTANCE_URL's)."""
    return f"/instances/{instance_id}"


def _pinned_location(instance_id: str, address: str) -> str:
    return f"""        # {instance_id}'s own way in (its HOTLINE_INSTANCE_URL): the media streams of
        # the calls whose webhook it took, down in the upstream (draining) or not.
        location = {instance_path(instance_id)}/twilio/media {{
            proxy_pass http://{address}/twilio/media;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
"""


def render(listen: str, upstreams: list[Upstream], *, workers: str = "auto",
           global_lines: tuple[str, ...] = (), http_lines: tuple[str, ...] = (),
           pinned: tuple[tuple[str, str], ...] = ()) -> str:
    """The config for these instances. Every instance `down` would leave nothing to send
    calls to: then all are kept (nginx's passive checks still skip a dead one). `pinned`:
    (instance id, address) pairs, each reachable at its `instance_path`."""
    if not upstreams:
        raise ValueError("a fleet needs at least one instance")
    if all(u.down for u in upstreams):
        upstreams = [Upstream(u.address) for u in upstreams]
    servers = "\n".join(
        f"        server {u.address} max_fails=1 fail_timeout=2s{' down' if u.down else ''};"
        for u in upstreams)
    values = {"LISTEN": listen, "SERVERS": servers, "WORKERS": workers,
              "GLOBAL": "\n".join(global_lines), "HTTP": "\n".join(f"    {line}"
                                                                   for line in http_lines)}
    locations = "".join(_pinned_location(i, address) for i, address in pinned)
    text = re.sub(r"^@PINNED@\n", lambda _: locations, template(), flags=re.MULTILINE)
    text = re.sub(r"@([A-Z]+)@", lambda m: values[m.group(1)], text)
    return text


def private_lines(work_dir: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Global and http lines that keep a private nginx inside `work_dir`."""
    temp = work_dir / "temp"
    global_lines = (f"pid {work_dir / 'nginx.pid'};",
                    f"error_log {work_dir / 'error.log'} warn;",
                    "daemon off;")
    http_lines = (f"access_log {work_dir / 'access.log'};",
                  *(f"{kind}_temp_path {temp / kind};"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")))
    return global_lines, http_lines


def nginx_binary() -> str:
    for candidate in ("nginx", "/usr/sbin/nginx"):
        found = shutil.which(candidate)
        if found:
            return found
    raise NginxError("nginx is not installed (Debian: apt-get install nginx; `make install` "
                     "does it as root)")


class NginxProcess:
    """`nginx -p WORK -c WORK/nginx.conf` in the foreground, as a child of this process."""

    def __init__(self, work_dir: Path, listen: str,
                 pinned: tuple[tuple[str, str], ...] = ()) -> None:
        self.work_dir = work_dir
        self.listen = listen
        self.pinned = pinned
        self.config_path = work_dir / "nginx.conf"
        self._process: asyncio.subprocess.Process | None = None
        self.reloads = 0

    def write_config(self, upstreams: list[Upstream]) -> None:
        global_lines, http_lines = private_lines(self.work_dir)
        # One worker: round robin is then strict alternation (a local fleet, and its tests).
        text = render(self.listen, upstreams, workers="1", global_lines=global_lines,
                      http_lines=http_lines, pinned=self.pinned)
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(self.config_path)

    async def start(self, upstreams: list[Upstream]) -> None:
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.work_dir / "temp" / kind).mkdir(parents=True, exist_ok=True)
        self.write_config(upstreams)
        binary = nginx_binary()
        await self._check(binary)
        log = (self.work_dir / "nginx.out").open("ab")
        with log:
            self._process = await asyncio.create_subprocess_exec(
                binary, "-p", str(self.work_dir), "-e", str(self.work_dir / "error.log"),
                "-c", str(self.config_path), stdout=log, stderr=log, start_new_session=True)
        await self._wait_listening()

    async def _check(self, binary: str) -> None:
        check = await asyncio.create_subprocess_exec(
            binary, "-t", "-q", "-p", str(self.work_dir), "-e", str(self.work_dir / "error.log"),
            "-c", str(self.config_path), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        output, _ = await check.communicate()
        if check.returncode != 0:
            raise NginxError(f"nginx refused {self.config_path}: {output.decode().strip()}")

    async def _wait_listening(self) -> None:
        host, _, port = self.listen.rpartition(":")
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                if self._process is not None and self._process.returncode is not None:
                    raise NginxError("nginx exited at start: "
                                     + (self.work_dir / "error.log").read_text()[-2000:])
                try:
                    _, writer = await asyncio.open_connection(host or "127.0.0.1", int(port))
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return

    def reload(self, upstreams: list[Upstream]) -> None:
        """New config, picked up by new workers; the old ones finish their connections."""
        self.write_config(upstreams)
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGHUP)
            self.reloads += 1

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGQUIT)  # graceful: workers finish their connections
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
