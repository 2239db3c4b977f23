"""Businesses in memory, so the voice webhook never waits for a database query.

Loaded at start-up; a background task asks the store for its config version (one cheap
query) every few seconds and reloads only when something changed. In a fleet, a change
saved through one instance is announced to the others (Redis pub/sub, `on_local_change`),
which reload at once; the polling remains the fallback (Redis down, a CLI without it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from hotline.business import BusinessConfig
from hotline.errors import HotlineError

log = logging.getLogger("hotline.config")


class BusinessSource(Protocol):
    async def list_businesses(self) -> list[BusinessConfig]: ...
    async def config_version(self) -> str: ...


class ConfigCache:
    def __init__(self, source: BusinessSource, refresh_s: float) -> None:
        self._source = source
        self._refresh_s = refresh_s
        self._by_slug: dict[str, BusinessConfig] = {}
        self._by_number: dict[str, BusinessConfig] = {}
        self._version: str | None = None
        self._task: asyncio.Task[None] | None = None
        # One (re)load at a time: one that read the store before a save must not finish
        # after the save's own reload and put the older config back.
        self._loading = asyncio.Lock()
        # Called with the new list of businesses after every (re)load.
        self.listeners: list[Callable[[list[BusinessConfig]], None]] = []
        # Called with the new version when a change made here (`load()` after a save) is
        # loaded: the fleet's other instances are told (Redis), not left to their polling.
        self.on_local_change: Callable[[str], None] | None = None

    async def load(self, *, local_change: bool = True) -> None:
        """(Re)load every business; `local_change`: a save made through this instance
        (the API, the dashboard) asked for it, so other instances are told."""
        async with self._loading:
            await self._load(local_change=local_change)

    async def _load(self, *, local_change: bool) -> None:
        version = await self._source.config_version()
        # Told even if the version is the one already loaded: the poll may have reloaded
        # this save between it and this load (the others then reload only if they lag).
        announce = local_change and self._version is not None
        businesses = await self._source.list_businesses()
        self._by_slug = {b.slug: b for b in businesses}
        self._by_number = {n: b for b in businesses for n in b.phone_numbers}
        self._version = version
        for listener in self.listeners:
            listener(businesses)
        if announce and self.on_local_change is not None:
            self.on_local_change(version)
        log.info("config loaded: %d businesses, %d numbers", len(self._by_slug),
                 len(self._by_number))

    async def refresh(self) -> bool:
        """Reload if the store changed; True if it did."""
        if await self._source.config_version() == self._version:
            return False
        await self.load(local_change=False)
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll(), name="config-cache-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except HotlineError as exc:
                log.warning("config refresh failed, keeping the cached config: %s", exc)
            except Exception:
                # The poll loop's top level: one bad refresh must not end all later ones.
                log.exception("config refresh failed unexpectedly, keeping the cached config")

    def business_for_number(self, number: str) -> BusinessConfig | None:
        return self._by_number.get(number)

    def business(self, slug: str) -> BusinessConfig | None:
        return self._by_slug.get(slug)

    def businesses(self) -> list[BusinessConfig]:
        return list(self._by_slug.values())
