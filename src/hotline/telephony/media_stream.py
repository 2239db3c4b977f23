"""WS /twilio/media: wait for `start`, claim the plan with its token, run the call."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, WebSocket

from hotline.call.call_recording import write_recording
from hotline.call.message_audio import keep_written, write_message_audio
from hotline.call.runner import CallClock, CallRunner
from hotline.canned import canned_audio
from hotline.core.amd import AnsweredBy
from hotline.core.events import UNHANDLED, AmdVerdict, TwilioStart
from hotline.core.record import TimelineStage
from hotline.errors import (
    CallPlanNotFound,
    InvalidStreamToken,
    RegistryUnavailable,
    TwilioProtocolError,
)
from hotline.logs import call_log
from hotline.plan import CallPlan
from hotline.prompts import CannedLine
from hotline.services import AMD_SIGNAL, Services, Signal
from hotline.telephony.media_codec import parse_twilio
from hotline.tools import Toolbox

log = logging.getLogger("hotline.media")
router = APIRouter()

START_TIMEOUT_S = 10.0
WS_POLICY_VIOLATION = 1008
WS_INTERNAL_ERROR = 1011


async def _wait_for_start(websocket: WebSocket) -> TwilioStart | None:
    """The stream's `start` (None if the socket closes first). Nothing else is done for a
    socket until then: no engine, no registry, no database. What comes before it is
    skipped; the first malformed message is logged, the rest are not (unauthenticated)."""
    logged = False
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is None:
            continue
        try:
            event = parse_twilio(text)
        except TwilioProtocolError as exc:
            if not logged:
                logged = True
                log.warning("malformed message before start skipped (later ones are not "
                            "logged): %s", str(exc)[:200])
            continue
        if isinstance(event, TwilioStart):
            return event
        if event is not UNHANDLED:
            log.debug("%s before start ignored", type(event).__name__)


async def _deliver_early_verdict(services: Services, runner: CallRunner, call_sid: str) -> None:
    """An answering-machine verdict that came before the stream (registered first, so one
    arriving now reaches the runner either way; the session ignores a second one)."""
    try:
        verdict = await services.registry.take_signal(call_sid, AMD_SIGNAL)
    except RegistryUnavailable as exc:
        log.warning("%s: early AMD verdict unreadable: %s", call_sid, exc)
        return
    if verdict is not None:
        runner.deliver(AmdVerdict(AnsweredBy.parse(verdict)))


def _stream_stage(services: Services, plan: CallPlan, ms: float) -> TimelineStage:
    """Which instances the call crossed: the webhook's and the stream's."""
    here = services.instance
    path = "same instance" if plan.instance_id in ("", here) else "cross-instance"
    return TimelineStage("stream_claimed", ms,
                         f"webhook on {plan.instance_id or here}, stream on {here}: {path}")


@router.websocket("/twilio/media")
async def media_stream(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    signature = websocket.headers.get("x-twilio-signature")
    settings = services.settings
    if (settings.twilio_validate_signatures
            and not any(services.signatures.valid_stream_upgrade(url, signature or "")
                        for url in (settings.media_stream_url, settings.instance_stream_url)
                        if url)):
        log.warning("media stream refused: %s X-Twilio-Signature on the upgrade",
                    "bad" if signature else "missing")
        await websocket.close(code=WS_POLICY_VIOLATION)
        return
    await websocket.accept()
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            start = await _wait_for_start(websocket)
    except TimeoutError:
        log.warning("media stream closed: no start within %.0f s", START_TIMEOUT_S)
        await websocket.close(code=WS_POLICY_VIOLATION)
        return
    if start is None:
        return
    started_at = datetime.now(UTC)
    start_seen = time.monotonic()  # Twilio's media timestamps count from here
    try:
        plan = await services.registry.claim(start.call_sid, start.parameters.get("token", ""))
    except (InvalidStreamToken, CallPlanNotFound) as exc:
        log.warning("media stream for %s refused: %s", start.call_sid, exc)
        await websocket.close(code=WS_POLICY_VIOLATION)
        return
    except RegistryUnavailable as exc:
        log.error("media stream for %s dropped: %s", start.call_sid, exc)
        await services.warm.discard(start.call_sid)
        await websocket.close(code=WS_INTERNAL_ERROR)
        return
    log_for_call = call_log(plan.call_sid, plan.business_slug)
    secret = services.settings.tool_signing_secret
    toolbox = Toolbox(plan, services.tools_http,
                      signing_secret=secret.get_secret_value() if secret else None)
    clock = CallClock(plan.webhook_received_epoch_ms, services.settings.clock_speed)
    runner = CallRunner(plan, websocket, services.warm.claim, log_for_call, clock,
                        greeting_frames=services.greetings.frames(plan.greeting_audio_key),
                        voicemail_frames=services.greetings.frames(plan.voicemail_audio_key),
                        toolbox=toolbox, control=services.control,
                        apology=canned_audio(CannedLine.APOLOGY,
                                             services.greetings.frames(plan.apology_audio_key),
                                             plan.language),
                        hold=canned_audio(CannedLine.HOLD,
                                          services.greetings.frames(plan.hold_audio_key),
                                          plan.language),
                        reopen_engine=services.warm.reopen,
                        connect_budget_s=services.settings.engine_connect_budget_ms / 1000)
    if runner.tape is not None:
        # The claim (a Redis round trip, a second or more when Redis is slow) comes between
        # the start and the runner: the caller's audio is placed from the start's arrival.
        runner.tape.stream_started_ms = clock.ms_at(start_seen)
    stage = _stream_stage(services, plan, clock.now_ms())
    runner.timeline.append(stage)
    log_for_call.info("stage %-24s %8.1f ms %s", stage.stage, stage.ms, stage.detail)
    if plan.instance_id and plan.instance_id != services.instance:
        # The instance that took the webhook closes its warm session now, not at expiry.
        services.announce(plan.call_sid, Signal.STREAM_CLAIMED, services.instance)
    services.active_calls[plan.call_sid] = runner
    services.drain.stream_arrived(plan.call_sid)
    if plan.amd:
        await _deliver_early_verdict(services, runner, plan.call_sid)
    try:
        record = await runner.run(start, started_at)
    except asyncio.CancelledError:
        # A forced shutdown cancelled the call (uvicorn's graceful timeout ran out): the
        # call is cut, its record is kept (journaled, even if the recorder has stopped).
        runner.failure = runner.failure or "cut by a forced shutdown"
        services.recorder.submit(runner.final_record(started_at))
        raise
    finally:
        services.active_calls.pop(plan.call_sid, None)
    written: set[str] = set()  # the message audio files written (none until they are)
    try:
        if runner.message_audio:  # the caller's recorded message (engine unavailable)
            written = await asyncio.to_thread(write_message_audio,
                                              Path(services.settings.data_dir),
                                              runner.message_audio)
        if runner.tape is not None:  # the business records its calls
            recording = await asyncio.to_thread(write_recording,
                                                Path(services.settings.data_dir), record,
                                                runner.tape, runner.ended_ms)
            if recording is not None:
                record.recording_file, record.recording_ms = recording
    except asyncio.CancelledError:
        # A forced shutdown while its files were written (an hour's call takes seconds;
        # the drain no longer counts it): the record is kept, without what was not written.
        keep_written(record, written)
        services.recorder.submit(record)
        raise
    except Exception:  # a bug (or no memory for an hours-long call) must not lose the record
        log_for_call.exception("call %s: its audio files not written", plan.call_sid)
    keep_written(record, written)
    services.recorder.submit(record)
    services.metrics.call_ended(record)
    log_for_call.info("call %s ended: %s, %d turns", plan.call_sid, record.outcome,
                  len(record.transcript))
