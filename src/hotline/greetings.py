"""Pre-rendered greetings: the engine speaks each distinct (text, voice) once, and calls
play it from memory the moment their stream starts.

Audio is kept as base64 μ-law frames, split and encoded once when loaded, so the media
loop only forwards strings. Files on disk (`<sha256>.ulaw`) survive restarts. Inbound
greetings are rendered when the business config loads or changes (stale ones are
dropped: a new greeting or voice is a new key), and so are each business's canned lines
(`hotline.canned`: the apology for when no engine can be had, the hold line for a
reconnect; rendered while the engine is healthy, in the business's voice and language);
outbound greetings are rendered when the call is placed, while the phone rings. In a
fleet (Redis) every render is shared: an instance looks there before rendering, and loads
a greeting another instance announces, so the one answering an outbound call has it too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from hotline.audio.mulaw import BYTES_PER_MS
from hotline.business import BusinessConfig
from hotline.prompts import CannedLine, canned_text

log = logging.getLogger("hotline.greetings")

FRAME_MS = 100  # one Twilio media message + one mark per 100 ms of greeting
# Outbound greetings are per callee ("Hi Dana, …"): keep the newest few, not all of them.
MAX_OTHER_GREETINGS = 256


class SpeechRenderer(Protocol):
    async def render_speech(self, text: str, voice: str) -> bytes: ...


class SharedAudio(Protocol):
    """Greeting audio other instances rendered (`hotline.registry.greeting_audio`)."""

    async def get(self, key: str) -> bytes | None: ...
    async def put(self, key: str, audio: bytes) -> bool: ...


def greeting_key(text: str, voice: str, model: str) -> str:
    return hashlib.sha256(f"{model}\0{voice}\0{text}".encode()).hexdigest()


def split_frames(audio: bytes, frame_ms: int = FRAME_MS) -> tuple[str, ...]:
    size = frame_ms * BYTES_PER_MS
    return tuple(base64.b64encode(audio[i:i + size]).decode()
                 for i in range(0, len(audio), size))


class GreetingCache:
    def __init__(self, renderer: SpeechRenderer, directory: Path | None, model: str, *,
                 shared: SharedAudio | None = None) -> None:
        self._renderer = renderer
        self._directory = directory
        self._model = model
        # A fleet's: looked in before rendering, given every render. `on_rendered` (the
        # key) tells the other instances, which then load it (`fetch_soon`).
        self._shared = shared
        self.on_rendered: Callable[[str], None] | None = None
        self._frames: dict[str, tuple[str, ...]] = {}
        self._rendering: dict[str, asyncio.Task[None]] = {}
        self._inbound_keys: set[str] = set()
        self._changed = asyncio.Condition()  # notified whenever a greeting becomes ready
        self.rendered = 0

    def key(self, text: str, voice: str) -> str:
        return greeting_key(text, voice, self._model)

    def frames(self, key: str | None) -> tuple[str, ...] | None:
        """The greeting's frames if they are in memory (the media path: no I/O)."""
        return self._frames.get(key) if key else None

    def has(self, key: str) -> bool:
        return key in self._frames

    async def wait_ready(self, businesses: list[BusinessConfig], timeout_s: float) -> None:
        """Until every business's inbound greeting is in memory (TimeoutError after
        timeout_s): the demo and the benchmark measure the cached path, not a cold cache."""
        keys = {self.key(b.greeting, b.voice) for b in businesses}
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: keys <= self._frames.keys())

    async def ensure(self, text: str, voice: str) -> str:
        """Make the greeting's audio available (memory, else disk, else the engine); one
        render per key however many callers ask at once."""
        key = self.key(text, voice)
        if key in self._frames:
            return key
        task = self._rendering.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_or_render(key, text, voice))
            self._rendering[key] = task
            task.add_done_callback(lambda done: self._render_done(key, done))
        await asyncio.shield(task)
        return key

    def _render_done(self, key: str, task: asyncio.Task[None]) -> None:
        self._rendering.pop(key, None)
        # Those who awaited it have seen its failure; if all of them were cancelled (a
        # shutdown mid-render), it is retrieved here rather than reported as never retrieved.
        if not task.cancelled() and task.exception() is not None:
            log.debug("greeting render for %s ended: %r", key, task.exception())

    def ensure_soon(self, text: str, voice: str) -> asyncio.Task[str]:
        """Start rendering in the background; a failure is logged, never raised."""
        return asyncio.get_running_loop().create_task(self._ensure_logged(text, voice))

    async def _ensure_logged(self, text: str, voice: str) -> str:
        try:
            return await self.ensure(text, voice)
        except Exception as exc:
            # A background task's top level: whatever the engine did, calls greet live.
            log.warning("greeting not rendered (%r); calls will greet live", exc)
            return ""

    async def _load_or_render(self, key: str, text: str, voice: str) -> None:
        path = self._path(key)
        if path is not None and path.exists():
            audio = await asyncio.to_thread(path.read_bytes)
        elif self._shared is not None and (from_fleet := await self._shared.get(key)):
            audio = from_fleet  # another instance rendered it
            if path is not None:
                await asyncio.to_thread(_write_atomically, path, audio)
        else:
            audio = await self._renderer.render_speech(text, voice)
            self.rendered += 1
            if path is not None:
                await asyncio.to_thread(_write_atomically, path, audio)
            log.info("greeting rendered: %d ms of audio, voice %s, %d chars", len(audio) //
                     BYTES_PER_MS, voice, len(text))
            told = self._shared is not None and await self._shared.put(key, audio)
            if told and self.on_rendered is not None:
                self.on_rendered(key)
        await self._keep(key, audio)

    def fetch_soon(self, key: str) -> None:
        """Another instance rendered this greeting: load it from the shared store into
        memory, in the background (a call answered here may want it any moment)."""
        if self._shared is None or key in self._frames or key in self._rendering:
            return
        task = asyncio.get_running_loop().create_task(self._fetch(key))
        self._rendering[key] = task
        task.add_done_callback(lambda done: self._render_done(key, done))

    async def _fetch(self, key: str) -> None:
        assert self._shared is not None
        audio = await self._shared.get(key)
        if audio:
            await self._keep(key, audio)

    async def _keep(self, key: str, audio: bytes) -> None:
        self._frames[key] = split_frames(audio)
        async with self._changed:
            self._changed.notify_all()
        others = [k for k in self._frames if k not in self._inbound_keys]
        for old in others[:-MAX_OTHER_GREETINGS]:
            self.forget(old)

    async def sync(self, businesses: list[BusinessConfig]) -> None:
        """Render every business's inbound greeting and canned lines; forget those no
        longer used."""
        texts = {(b.greeting, b.voice) for b in businesses}
        canned = {(canned_text(line, b.language), b.voice)
                  for b in businesses for line in CannedLine}
        texts |= canned
        wanted = {self.key(text, voice) for text, voice in texts}
        for stale in self._inbound_keys - wanted:
            self.forget(stale)
        self._inbound_keys = wanted
        greetings = asyncio.gather(*(self._ensure_logged(b.greeting, b.voice)
                                     for b in businesses))
        lines = asyncio.gather(*(self._ensure_logged(text, voice) for text, voice in canned))
        ready, _ = await asyncio.gather(greetings, lines)
        log.info("greeting cache: %d of %d inbound greetings ready (and the canned lines)",
                 sum(1 for r in ready if r), len(businesses))

    def forget(self, key: str) -> None:
        self._frames.pop(key, None)
        path = self._path(key)
        if path is not None:
            path.unlink(missing_ok=True)

    def _path(self, key: str) -> Path | None:
        return self._directory / f"{key}.ulaw" if self._directory is not None else None


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)
