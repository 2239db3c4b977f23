"""A sampling profile of the server under load (py-spy, from the `dev` extra): where its
CPU goes, by function (self time) and by area of the code (inclusive)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

RATE_HZ = 250
# Areas of the media loop, matched in a sample's stack (innermost match wins).
AREAS = (
    ("uvicorn/websockets protocol", ("websockets_sansio_impl", "websockets_impl",
                                     "wsproto_impl", "websockets/protocol.py",
                                     "websockets/frames.py", "websockets/asyncio")),
    ("Starlette/FastAPI WebSocket", ("starlette/websockets.py",)),
    # The SDK's own send path (its queue, task lookup) sits between the runner and the
    # websockets client: without it here, it was counted as the runner's.
    ("openai SDK connection", ("openai/",)),
    ("engine codec (JSON in/out)", ("realtime_codec.py",)),
    ("Twilio codec (JSON in/out)", ("media_codec.py",)),
    ("call core (session, playback, gate)", ("hotline/core/", "hotline/audio/")),
    ("runner (dispatch, sends)", ("call/runner.py",)),
    ("event loop, sockets", ("asyncio/", "uvloop")),
)
# Whose WebSocket library work a sample is (its innermost library frame): the Twilio socket
# (uvicorn's protocol, Starlette's WebSocket) or the engine's (the openai SDK's connection,
# the websockets client under it). websockets' sans-I/O parser serves both, so the caller
# above it decides.
SOCKETS = (
    ("Twilio socket: uvicorn + websockets sans-I/O + Starlette",
     ("websockets_sansio_impl", "websockets_impl", "wsproto_impl", "starlette/websockets.py")),
    ("engine socket: openai SDK + websockets client", ("websockets/asyncio", "openai/")),
)
NO_SOCKET = "neither: the call core, runner, codecs, event loop"


@dataclass(frozen=True, slots=True)
class Profile:
    calls: int
    samples: int
    functions: list[tuple[str, float]]  # (function (file:line), share of samples), self time
    areas: list[tuple[str, float]]  # inclusive share per area
    # Share per socket of the samples in WebSocket library code, and the rest.
    sockets: list[tuple[str, float]] = field(default_factory=list)

    def markdown(self, title: str) -> str:
        lines = [f"#### {title}: py-spy, {self.calls} calls, {self.samples} samples", "",
                 "| area (inclusive) | share |", "|---|---:|"]
        lines += [f"| {name} | {share:.0%} |" for name, share in self.areas]
        if self.sockets:
            lines += ["", "| WebSocket library work by socket (inclusive) | share |",
                      "|---|---:|"]
            lines += [f"| {name} | {share:.0%} |" for name, share in self.sockets]
        lines += ["", "| function (self time) | share |", "|---|---:|"]
        lines += [f"| `{name}` | {share:.1%} |" for name, share in self.functions]
        return "\n".join(lines) + "\n"


def available() -> bool:
    return shutil.which("py-spy") is not None


def start_profiler(pid: int, seconds: float) -> tuple[subprocess.Popen[bytes], Path] | None:
    if not available():
        return None
    out = Path(tempfile.mkstemp(prefix="hotline-capacity-", suffix=".txt")[1])
    process = subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
         "--rate", str(RATE_HZ), "--format", "raw", "--function", "--nonblocking",
         "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, out


def finish_profiler(process: subprocess.Popen[bytes], out: Path, *, calls: int,
                    top: int = 15) -> Profile | None:
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        return None
    try:
        return parse_collapsed(out.read_text(), calls=calls, top=top)
    finally:
        out.unlink(missing_ok=True)


def parse_collapsed(text: str, *, calls: int, top: int = 15) -> Profile | None:
    """py-spy's raw (collapsed) format: `frame;frame;... count` per line, each frame
    `function (file)` (py-spy leaves idle samples, the loop's wait, out)."""
    by_function: dict[str, int] = {}
    by_area: dict[str, int] = {}
    by_socket: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        leaf = frames[-1]
        count = int(count_text)
        total += count
        name = _short(leaf)
        by_function[name] = by_function.get(name, 0) + count
        area = next((label for frame in reversed(frames) for label, marks in AREAS
                     if any(mark in frame for mark in marks)), "other")
        by_area[area] = by_area.get(area, 0) + count
        socket = next((label for frame in reversed(frames) for label, marks in SOCKETS
                       if any(mark in frame for mark in marks)), NO_SOCKET)
        by_socket[socket] = by_socket.get(socket, 0) + count
    if not total:
        return None
    functions = sorted(by_function.items(), key=lambda kv: -kv[1])[:top]
    areas = sorted(by_area.items(), key=lambda kv: -kv[1])
    return Profile(calls, total, [(n, c / total) for n, c in functions],
                   [(n, c / total) for n, c in areas],
                   [(n, by_socket.get(n, 0) / total)
                    for n in (*(label for label, _ in SOCKETS), NO_SOCKET)])


def _short(frame: str) -> str:
    """`send (starlette/websockets.py:123)` from py-spy's full path."""
    function, _, where = frame.partition(" (")
    where = where.rstrip(")")
    parts = where.split("/")
    for anchor in ("site-packages", "src", "lib"):
        if anchor in parts:
            parts = parts[len(parts) - parts[::-1].index(anchor):]
            break
    return f"{function} ({'/'.join(parts[-2:])})"
