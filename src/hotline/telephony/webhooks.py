"""Twilio's HTTP side: the voice webhook (inbound and answered outbound calls) and status
callbacks. The voice webhook answers from memory: config cache + registry, no database."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from hotline.call.recorder import CallStatusUpdate
from hotline.errors import RegistryUnavailable
from hotline.plan import CallPlan, build_inbound_plan
from hotline.prompts import apology_text, hold_text
from hotline.services import AMD_SIGNAL, Services, Signal
from hotline.telephony.twiml import (
    UNKNOWN_NUMBER_MESSAGE,
    connect_stream,
    fail_over,
    say_and_hang_up,
)

log = logging.getLogger("hotline.webhooks")
# Twilio's callbacks (signed, form-encoded): not part of the API the OpenAPI schema documents.
router = APIRouter(prefix="/twilio", include_in_schema=False)

FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
AMD_SIGNAL_TTL_S = 15 * 60  # kept for a stream not started yet (AMD needs < 2 min)


def _xml(body: str) -> Response:
    return Response(content=body, media_type="application/xml")


async def _signed_form(request: Request, services: Services,
                       *required: str) -> dict[str, str] | Response:
    """The form fields of a request Twilio signed, with every `required` field present; or
    the answer to give: 403 for a bad signature, 400 naming the missing fields."""
    form = await request.form()
    params = {key: str(value) for key, value in form.multi_items()}
    signature = request.headers.get("X-Twilio-Signature")
    if services.settings.twilio_validate_signatures and not services.signatures.valid_form(
            request.url.path, request.url.query, params, signature):
        log.warning("rejected %s: %s X-Twilio-Signature (CallSid %s)", request.url.path,
                    "bad" if signature else "missing", params.get("CallSid", "?"))
        return Response("invalid signature", status_code=403)
    missing = [name for name in required if not params.get(name)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        return Response(f"{' and '.join(missing)} {verb} required", status_code=400)
    return params


@router.post("/voice")
async def voice(request: Request) -> Response:
    received_epoch_ms = time.time() * 1000
    t0 = time.perf_counter()
    services: Services = request.app.state.services
    params = await _signed_form(request, services, "CallSid")
    if isinstance(params, Response):
        return params
    call_sid = params["CallSid"]
    from_number, to_number = params.get("From", ""), params.get("To", "")
    pending_id = request.query_params.get("outbound")
    if services.drain.draining:
        return _xml(_fail_over(services, params, pending_id))
    if pending_id:
        plan = await services.registry.take_pending(pending_id)
        if plan is None:
            log.warning("outbound call %s: its plan expired or is unknown", call_sid)
            return _xml(say_and_hang_up("Sorry, we can't continue this call. Goodbye."))
        # Outbound: From is our number and To the callee, as Twilio reports them.
        plan = plan.with_call(call_sid, from_number, to_number).restarted(received_epoch_ms)
    else:
        business = services.config.business_for_number(to_number)
        if business is None:
            log.warning("call %s to unknown number %s from %s: declined politely",
                        call_sid, to_number, from_number)
            return _xml(say_and_hang_up(UNKNOWN_NUMBER_MESSAGE))
        plan = build_inbound_plan(services.settings, business, call_sid=call_sid,
                                  from_number=from_number, to_number=to_number,
                                  webhook_received_epoch_ms=received_epoch_ms)
    plan = _with_greeting_audio(services, plan)
    if services.settings.warm_sessions and plan.bot_speaks_first and not plan.greets_after_amd:
        # (A greeting held for the AMD verdict is asked for by the core, not early.)
        plan = replace(plan, greeting_prerequested=plan.greeting_audio_key is None)
    plan = replace(plan, instance_id=services.instance).with_stage(
        "webhook_received", 0.0).with_stage("plan_ready", (time.perf_counter() - t0) * 1000)
    # This instance's own URL when it has one, so the stream finds the warm session here;
    # else any instance, through the load balancer.
    settings = services.settings
    twiml = connect_stream(settings.instance_stream_url or settings.media_stream_url,
                           {"token": plan.token, "business": plan.business_slug})
    plan = plan.with_stage("twiml_sent", (time.perf_counter() - t0) * 1000)
    shared = await services.registry.put(plan, services.settings.plan_ttl_s)
    if settings.redis_url and not shared and settings.instance_stream_url is None:
        log.warning("call %s: Redis is down and HOTLINE_INSTANCE_URL unset: its stream "
                    "finds its plan only if the load balancer sends it here", call_sid)
    services.drain.expect_stream(call_sid)  # a drain starting now waits for this call too
    if services.settings.warm_sessions:
        services.warm.prepare(plan)  # in the background: the TwiML does not wait for it
    log.info("call %s %s %s -> %s: plan ready for %s (compact %d chars, full %d chars)",
             call_sid, plan.direction, from_number, to_number, plan.business_slug,
             len(plan.compact_instructions), len(plan.full_instructions))
    return _xml(twiml)


def _fail_over(services: Services, params: dict[str, str], pending_id: str | None) -> str:
    """This instance drains: the call goes to the fail-over URL, or hears an apology in its
    business's language. An outbound call's plan stays in the registry, for the instance
    the fail-over URL reaches (with a shared registry) to take."""
    url = services.settings.failover_url
    if url and pending_id:
        url += ("&" if "?" in url else "?") + urlencode({"outbound": pending_id})
    ours = params.get("From" if pending_id else "To", "")
    business = services.config.business_for_number(ours)
    log.warning("call %s while draining: %s", params["CallSid"],
                f"redirected to {url}" if url else "apology and hang-up")
    return fail_over(url, business.language if business else None)


def _with_greeting_audio(services: Services, plan: CallPlan) -> CallPlan:
    """Use the cached greeting (and voicemail) when its audio is in memory now; otherwise
    the engine says it live."""
    if not services.settings.greeting_cache:
        return replace(plan, greeting_audio_key=None, voicemail_audio_key=None)
    return replace(plan, greeting_audio_key=_cached_key(services, plan.greeting, plan.voice),
                   voicemail_audio_key=_cached_key(services, plan.voicemail, plan.voice),
                   apology_audio_key=_cached_key(services, apology_text(plan.language),
                                                 plan.voice),
                   hold_audio_key=_cached_key(services, hold_text(plan.language), plan.voice))


def _cached_key(services: Services, text: str, voice: str) -> str | None:
    if not text:
        return None
    key = services.greetings.key(text, voice)
    return key if services.greetings.has(key) else None


@router.post("/amd")
async def amd(request: Request) -> Response:
    """Twilio's async answering-machine verdict for an outbound call (AsyncAmdStatusCallback).
    It goes to the running call on whichever instance runs it; one that arrives before the
    stream starts waits in the registry for it."""
    services: Services = request.app.state.services
    params = await _signed_form(request, services, "CallSid", "AnsweredBy")
    if isinstance(params, Response):
        return params
    call_sid, answered_by = params["CallSid"], params["AnsweredBy"]
    log.info("amd %s: %s after %s ms", call_sid, answered_by,
             params.get("MachineDetectionDuration", "?"))
    try:
        await services.registry.signal(call_sid, AMD_SIGNAL, answered_by, AMD_SIGNAL_TTL_S)
    except RegistryUnavailable as exc:
        log.error("amd %s: verdict lost: %s", call_sid, exc)
        return Response("registry unavailable", status_code=503)
    return Response(status_code=204)


@router.post("/status")
async def status(request: Request) -> Response:
    services: Services = request.app.state.services
    params = await _signed_form(request, services, "CallSid", "CallStatus")
    if isinstance(params, Response):
        return params
    call_sid, call_status = params["CallSid"], params["CallStatus"]
    services.recorder.submit(CallStatusUpdate(
        call_sid=call_sid,
        status=call_status,
        at=_timestamp(params.get("Timestamp")),
        sequence=_int(params.get("SequenceNumber")),
        duration_s=_int(params.get("CallDuration")),
    ))
    if call_status in FINAL_STATUSES:
        services.drain.stream_arrived(call_sid)  # none will now
        # A plan whose stream never opened must not outlive its call.
        await services.registry.discard(call_sid)
        await services.dialer.forget(call_sid)
        await services.warm.discard(call_sid)
        if services.registry.shared:  # the instance that took its webhook may be another
            services.announce(call_sid, Signal.CALL_ENDED, call_status)
    log.info("status %s: %s", call_sid, call_status)
    return Response(status_code=204)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _timestamp(value: str | None) -> datetime:
    if value:
        try:
            return parsedate_to_datetime(value).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    return datetime.now(UTC)
