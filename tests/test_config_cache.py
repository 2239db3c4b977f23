"""ConfigCache on the real store, and the running server picking up a new business.

The only double is `FlakySource`: the real store whose `config_version()` can be switched to
"down" (raising `StoreUnavailable`, as the real one does when its database is unreachable),
since a database that goes down and comes back on cue cannot be produced here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from hotline.business import BusinessConfig, GreetingTiming, TemplateConfig
from hotline.business_yaml import dump_business_yaml, load_businesses_yaml
from hotline.config_cache import ConfigCache
from hotline.errors import StoreUnavailable
from hotline.plan import build_outbound_plan
from hotline.settings import Settings
from hotline.sim.call_result import PhoneCallResult
from hotline.sim.script import CallScript, Hangup
from hotline.store import Store
from tests.factories import TEST_NUMBER, make_business
from tests.stack import Stack, running_stack

CALLER = "+15550001111"
OTHER_NUMBER = "+15005550007"
NEW_NUMBER = "+15005550008"


class FlakySource:
    """The real store; while `down`, asking it anything fails like an unreachable database."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.down = False
        self.failures = 0

    def _check(self) -> None:
        if self.down:
            self.failures += 1
            raise StoreUnavailable("database sqlite:///… is unavailable: simulated outage")

    async def config_version(self) -> str:
        self._check()
        return await self._store.config_version()

    async def list_businesses(self) -> list[BusinessConfig]:
        self._check()
        return await self._store.list_businesses()


async def eventually(condition_name: str, check: Callable[[], bool],
                     timeout_s: float = 10.0) -> None:
    """Poll `check()` until true; fail naming the condition."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {condition_name}")
        await asyncio.sleep(0.01)


# -- load and refresh -----------------------------------------------------------------------
async def test_load_indexes_businesses_by_slug_and_number(store: Store) -> None:
    await store.save_business(make_business())
    await store.save_business(make_business(slug="caller-first", name="Caller First Co",
                                            phone_numbers=(OTHER_NUMBER, NEW_NUMBER)))
    cache = ConfigCache(store, refresh_s=60)
    assert cache.business_for_number(TEST_NUMBER) is None  # nothing before load()
    await cache.load()

    acme = cache.business_for_number(TEST_NUMBER)
    assert acme is not None and acme.slug == "acme-dental" and acme.name == "Acme Dental"
    assert acme.template("reminder").greeting_template.startswith("Hi {name}")
    for number in (OTHER_NUMBER, NEW_NUMBER):
        found = cache.business_for_number(number)
        assert found is not None and found.slug == "caller-first", number
    assert cache.business("caller-first") == cache.business_for_number(NEW_NUMBER)
    assert cache.business("acme-dental") == acme
    assert cache.business_for_number("+15005550999") is None
    assert cache.business("nobody") is None
    assert sorted(b.slug for b in cache.businesses()) == ["acme-dental", "caller-first"]


async def test_a_greeting_timing_from_yaml_reaches_the_outbound_plan(
    store: Store, tmp_path: Path
) -> None:
    # The path a setting takes: business YAML -> store -> cache -> the call's plan.
    path = tmp_path / "businesses.yaml"
    path.write_text(dump_business_yaml(make_business()).replace(
        "  tools:", "  greeting_timing: after_amd\n  tools:").replace(
        "    instructions:", "    greeting_timing: immediate\n    instructions:"))
    (business,) = load_businesses_yaml(path)
    await store.save_business(business)
    cache = ConfigCache(store, refresh_s=60)
    await cache.load()
    cached = cache.business("acme-dental")
    assert cached is not None and cached.greeting_timing is GreetingTiming.AFTER_AMD
    assert cached.template("reminder").greeting_timing is GreetingTiming.IMMEDIATE
    plan = build_outbound_plan(Settings(), cached, template_name="reminder",
                               variables={"name": "Dana"}, from_number=TEST_NUMBER,
                               to_number=CALLER, created_epoch_ms=0.0)
    assert plan.greeting_timing is GreetingTiming.IMMEDIATE and not plan.greets_after_amd

    # The template's override dropped: the business's holds the greeting for the verdict.
    await store.save_template("acme-dental", dataclasses.replace(
        cached.template("reminder"), greeting_timing=None, id=None))
    assert await cache.refresh() is True
    cached = cache.business("acme-dental")
    assert cached is not None and cached.template("reminder").greeting_timing is None
    plan = build_outbound_plan(Settings(), cached, template_name="reminder",
                               variables={"name": "Dana"}, from_number=TEST_NUMBER,
                               to_number=CALLER, created_epoch_ms=0.0)
    assert plan.greeting_timing is GreetingTiming.AFTER_AMD and plan.greets_after_amd


async def test_a_change_saved_here_is_announced_even_when_the_poll_loaded_it_first(
        store: Store) -> None:
    """The API saves, then loads: the poll may reload the new version in between (the API
    sees nothing changed). The fleet's other instances must still be told."""
    await store.save_business(make_business())
    cache = ConfigCache(store, refresh_s=60)
    await cache.load()  # at start: nothing to tell
    told: list[str] = []
    cache.on_local_change = told.append
    await store.save_business(make_business(greeting="Acme Dental, good morning!"))
    assert await cache.refresh() is True  # the poll, between the save and the API's load
    assert told == []  # the poll's reload is not a change made here
    await cache.load()  # the API's, after its save
    assert told == [await store.config_version()]


async def test_refresh_reloads_only_when_the_store_changed(store: Store) -> None:
    await store.save_business(make_business())
    await store.save_business(make_business(slug="caller-first", name="Caller First Co",
                                            phone_numbers=(OTHER_NUMBER,)))
    cache = ConfigCache(store, refresh_s=60)
    await cache.load()
    assert await cache.refresh() is False

    # A business saved with a new greeting, its number moved: both picked up.
    await store.save_business(make_business(greeting="Acme Dental, good morning!",
                                            phone_numbers=(NEW_NUMBER,)))
    assert await cache.refresh() is True
    moved = cache.business_for_number(NEW_NUMBER)
    assert moved is not None and moved.greeting == "Acme Dental, good morning!"
    assert cache.business_for_number(TEST_NUMBER) is None  # the old number is gone
    assert cache.business("caller-first") is not None  # the other business untouched
    assert await cache.refresh() is False

    # A template saved on its own counts as a change too.
    await store.save_template("acme-dental", TemplateConfig("follow-up", "Hi {name}, again.",
                                                            "Ask how {name} is doing."))
    assert await cache.refresh() is True
    acme = cache.business("acme-dental")
    assert acme is not None
    assert acme.template("follow-up").greeting_template == "Hi {name}, again."

    # A new business.
    await store.save_business(make_business(slug="newco", name="New Co",
                                            phone_numbers=(TEST_NUMBER,)))
    assert await cache.refresh() is True
    newco = cache.business_for_number(TEST_NUMBER)
    assert newco is not None and newco.slug == "newco"
    assert await cache.refresh() is False


async def test_the_poll_loop_keeps_the_cached_config_through_an_outage(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hotline.config")
    original = await store.save_business(make_business())
    source = FlakySource(store)
    cache = ConfigCache(source, refresh_s=0.01)
    await cache.load()
    source.down = True
    await store.save_business(dataclasses.replace(original, greeting="Changed while down."))
    cache.start()
    try:
        await eventually("three failed refreshes", lambda: source.failures >= 3)
        # Still answering, from what it had.
        kept = cache.business_for_number(TEST_NUMBER)
        assert kept is not None and kept.greeting == original.greeting
        assert "config refresh failed, keeping the cached config" in caplog.text
        # The loop survived the failures: once the store is back, the change arrives.
        source.down = False

        def changed() -> bool:
            business = cache.business_for_number(TEST_NUMBER)
            return business is not None and business.greeting == "Changed while down."

        await eventually("the change picked up after the outage", changed)
    finally:
        await cache.stop()


class HeldSource:
    """The real store; once `hold()` is called, the next `list_businesses()` reads the store,
    then waits for `release()` before answering (a slow query, on cue)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._gate = asyncio.Event()
        self._held = False
        self.read = asyncio.Event()

    def hold(self) -> None:
        self._held = True

    def release(self) -> None:
        self._gate.set()

    async def config_version(self) -> str:
        return await self._store.config_version()

    async def list_businesses(self) -> list[BusinessConfig]:
        held, self._held = self._held, False
        businesses = await self._store.list_businesses()
        if held:
            self.read.set()
            await self._gate.wait()
        return businesses


async def test_a_slow_reload_does_not_overwrite_a_later_one(store: Store) -> None:
    # A reload (a poll, another save) that read the store before a save and answers after
    # the save's own reload must not put the older config back in the cache.
    await store.save_business(make_business())
    source = HeldSource(store)
    cache = ConfigCache(source, refresh_s=60)
    await cache.load()
    source.hold()
    slow = asyncio.create_task(cache.load())
    await source.read.wait()
    await store.save_business(make_business(greeting="Saved meanwhile."))
    latest = asyncio.create_task(cache.load())
    # Unlocked, the later load finishes meanwhile; locked, it waits for the slow one.
    await asyncio.wait({latest}, timeout=0.5)
    source.release()
    await asyncio.gather(slow, latest)
    business = cache.business("acme-dental")
    assert business is not None and business.greeting == "Saved meanwhile."


async def test_stop_ends_the_poll_loop(store: Store) -> None:
    await store.save_business(make_business())
    cache = ConfigCache(store, refresh_s=0.01)
    await cache.load()
    cache.start()
    await cache.stop()
    await store.save_business(make_business(greeting="After stop."))
    await asyncio.sleep(0.1)  # ten refresh periods: a live loop would have reloaded
    business = cache.business("acme-dental")
    assert business is not None and business.greeting != "After stop."


# -- the running server ---------------------------------------------------------------------
async def answer_to(stack: Stack, number: str) -> PhoneCallResult:
    """Call `number`: the TwiML the server answered with (hanging up during any <Say>)."""
    call = stack.phone.start_call(to=number, from_=CALLER, script=CallScript([Hangup()]))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not call.result.verbs and not call.done():
        if loop.time() > deadline:
            raise AssertionError(f"no TwiML for a call to {number}")
        await asyncio.sleep(0.01)
    if call.result.say_texts:
        call.hangup()  # don't sit through the spoken goodbye
    return await asyncio.wait_for(call.wait(), 10)


@pytest.mark.sockets
async def test_a_business_added_while_running_answers_its_number(
        database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, [make_business()],
                             config_refresh_s=0.1) as stack:
        before = await answer_to(stack, NEW_NUMBER)
        assert before.webhook_status == 200 and before.say_texts
        assert "not in service" in before.say_texts[0] and before.custom_parameters == {}

        admin = Store(database_url)  # another process's store, say `hotline business add`
        try:
            await admin.save_business(make_business(
                slug="newco", name="New Co", greeting="New Co, hello.",
                phone_numbers=(NEW_NUMBER,)))
        finally:
            await admin.close()

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while True:
            result = await answer_to(stack, NEW_NUMBER)
            assert result.webhook_status == 200
            if not result.say_texts:
                break
            if loop.time() > deadline:
                raise AssertionError("the new business never answered its number")
            await asyncio.sleep(0.05)
        assert result.stream_url is not None and result.stream_url.endswith("/twilio/media")
        assert result.custom_parameters["token"]
        assert result.custom_parameters["business"] == "newco"
        # The existing business kept its number.
        acme = await answer_to(stack, TEST_NUMBER)
        assert acme.custom_parameters.get("business") == "acme-dental"
