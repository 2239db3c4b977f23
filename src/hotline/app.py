"""create_app(): the FastAPI application, its routers and its lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import Depends, FastAPI

from hotline import __version__
from hotline.admin.api import router as api_router
from hotline.admin.businesses import router as businesses_router
from hotline.admin.calls import router as calls_router
from hotline.admin.dashboard import install as install_dashboard
from hotline.admin.messages import router as messages_router
from hotline.admin.recordings import router as recordings_router
from hotline.admin.stats import router as stats_router
from hotline.admin.templates import router as templates_router
from hotline.admin.v1 import readable_params
from hotline.body_limit import BodyLimit
from hotline.business import BusinessConfig
from hotline.call.recorder import CallRecorder
from hotline.call.recording_retention import sweep_periodically
from hotline.canned import load_built_in
from hotline.config_cache import ConfigCache
from hotline.engine.openai_realtime import RealtimeEngine
from hotline.engine.warm import WarmSessions
from hotline.greetings import GreetingCache
from hotline.metrics import router as metrics_router
from hotline.readiness import router as readiness_router
from hotline.registry import create_registry
from hotline.registry.greeting_audio import RedisGreetingAudio
from hotline.services import Services, Signal
from hotline.settings import Settings, load_settings
from hotline.store.database import Store
from hotline.telephony.call_control import CallControl
from hotline.telephony.media_stream import router as media_router
from hotline.telephony.outbound import OutboundDialer
from hotline.telephony.rest import TwilioRest
from hotline.telephony.signature import SignatureChecker
from hotline.telephony.webhooks import router as webhook_router

log = logging.getLogger("hotline")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(settings.database_url)
        await store.upgrade()
        config = ConfigCache(store, settings.config_refresh_s)
        registry = create_registry(settings.redis_url)
        recorder = CallRecorder(store, journal_path=settings.journal_file)
        await recorder.start()
        engine = RealtimeEngine(settings)
        load_built_in()  # the built-in apologies, read now: the media loop never reads files
        shared_audio = RedisGreetingAudio(settings.redis_url) if settings.redis_url else None
        greetings = GreetingCache(engine, Path(settings.greeting_cache_dir),
                                  settings.openai_model, shared=shared_audio)
        background: set[asyncio.Task[None]] = set()
        if settings.greeting_cache:
            def render_greetings(businesses: list[BusinessConfig]) -> None:
                task = asyncio.get_running_loop().create_task(greetings.sync(businesses))
                background.add(task)
                task.add_done_callback(background.discard)

            config.listeners.append(render_greetings)
        await config.load()
        rest = TwilioRest(settings)
        dialer = OutboundDialer(settings, registry, config, greetings, rest)
        tools_http = httpx.AsyncClient(follow_redirects=False)
        services = Services(
            settings=settings, store=store, config=config, registry=registry,
            recorder=recorder, engine=engine, dialer=dialer,
            signatures=SignatureChecker(settings.twilio_auth_token.get_secret_value(),
                                        settings.public_url),
            warm=WarmSessions(engine, settings.warm_session_ttl_s), greetings=greetings,
            control=CallControl(rest), tools_http=tools_http,
        )
        app.state.services = services
        await registry.listen(services.hear_signal)
        config.on_local_change = lambda version: services.announce("", Signal.CONFIG, version)
        greetings.on_rendered = lambda key: services.announce("", Signal.GREETING, key)
        if not settings.twilio_validate_signatures:
            log.warning("X-Twilio-Signature checks are OFF (HOTLINE_TWILIO_VALIDATE_SIGNATURES"
                        "=false): anyone can post webhooks. Local development only.")
        config.start()
        sweeper = asyncio.create_task(
            sweep_periodically(store, Path(settings.data_dir),
                               settings.recording_sweep_interval_s),
            name="recording-sweeper")
        background.add(sweeper)
        # Everything built so far lives as long as the process. Frozen out of the garbage
        # collector, it is no longer rescanned by each full collection: the benchmark saw
        # 110-150 ms full-collection pauses land on a call's greeting without this.
        gc.collect()
        gc.freeze()
        log.info("hotline %s ready: instance %s, public URL %s, store %s, registry %s",
                 __version__, settings.instance_name, settings.public_url, store.url,
                 "redis" if settings.redis_url else "in-process")
        try:
            yield
        finally:
            await config.stop()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await services.stop_background()
            await services.warm.close()
            await recorder.stop()
            await rest.close()
            await tools_http.aclose()
            await engine.close()
            await registry.close()
            if shared_audio is not None:
                await shared_audio.close()
            await store.close()

    app = FastAPI(title="Hotline", version=__version__, lifespan=lifespan,
                  openapi_url="/api/openapi.json", docs_url="/api/docs", redoc_url=None)
    app.add_middleware(BodyLimit)  # webhook and API bodies are small: refuse big ones early
    app.include_router(webhook_router)
    app.include_router(media_router)
    # The API's parameters are checked for what the database cannot take (NUL) first.
    checked = [Depends(readable_params)]
    app.include_router(api_router, dependencies=checked)
    app.include_router(businesses_router, dependencies=checked)  # /api/v1/businesses
    app.include_router(recordings_router, dependencies=checked)  # /api/v1/calls/{sid}/recording
    app.include_router(templates_router, dependencies=checked)  # …/{slug}/templates
    app.include_router(stats_router, dependencies=checked)  # …/{slug}/stats
    app.include_router(calls_router, dependencies=checked)  # /api/v1/calls
    app.include_router(messages_router, dependencies=checked)  # /api/v1/messages
    app.include_router(metrics_router)
    app.include_router(readiness_router)  # /healthz, /readyz
    install_dashboard(app)  # the owner's dashboard: /, /calls, /businesses, … and /static
    return app
