"""A private PostgreSQL cluster for fault tests: initdb in a temp dir, started and stopped
with pg_ctl on a free port, trust authentication. Never the machine's shared server.

As root (here and in CI) PostgreSQL refuses to run, so its tools run as the `postgres`
user (`runuser`). Missing binaries skip the tests locally and fail them in CI
(`tests.services.unavailable`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import asyncpg

from tests.server_process import free_port
from tests.services import unavailable

# Fast: the OS keeps what PostgreSQL wrote when it is stopped (-m immediate, a crash), so
# no fsync is needed. (Not synchronous_commit=off: a crash would lose the last commits.)
FAST_SETTINGS = ("-c fsync=off -c full_page_writes=off "
                 "-c max_connections=50 -c shared_buffers=16MB")


def find_postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian's layout), or PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(
                       p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


class PostgresCluster:
    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)

    @classmethod
    def create(cls) -> PostgresCluster:
        bin_dir = find_postgres_bin()
        if bin_dir is None:
            unavailable("PostgreSQL's initdb and pg_ctl", "not installed")
            raise AssertionError("unreachable")
        root = Path(tempfile.mkdtemp(prefix="hotline-pg-"))
        os.chmod(root, 0o755)
        cluster = cls(bin_dir, root)
        try:
            cluster._run("initdb", "-D", str(cluster.data), "-A", "trust", "-U", "postgres",
                         "-E", "UTF8", "--locale=C", "--no-sync")
        except (OSError, subprocess.CalledProcessError, KeyError) as exc:
            shutil.rmtree(root, ignore_errors=True)
            unavailable("a private PostgreSQL cluster (initdb)", exc)
        return cluster

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   + FAST_SETTINGS)
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options,
                  "-w", "-t", "30", "start")

    def stop(self) -> None:
        """Stopped at once, as by a crash (connections are cut, nothing is waited for)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    async def running(self) -> bool:
        try:
            connection = await asyncpg.connect(host="127.0.0.1", port=self.port,
                                               user="postgres", database="postgres", timeout=5)
        except (OSError, asyncpg.PostgresError):
            return False
        await connection.close()
        return True

    def url(self, database: str, port: int | None = None) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port or self.port}/{database}"

    async def create_database(self, name: str) -> str:
        connection = await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres",
                                           database="postgres", timeout=10)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return self.url(name)

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as_postgres, str(self.bin_dir / tool), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
