"""Placing outbound calls through Twilio's REST API (the twilio SDK, async client).

The plan is prebuilt when the call is placed: the template is rendered, both prompts are
made, and the plan waits in the registry under a pending id carried in the webhook URL.
The answered webhook then only takes it (no race with the CallSid Twilio returns).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from hotline.config_cache import ConfigCache
from hotline.errors import HotlineError, TwilioApiError, UnknownNumber
from hotline.greetings import GreetingCache
from hotline.plan import build_outbound_plan
from hotline.registry import CallRegistry
from hotline.settings import Settings
from hotline.telephony.rest import TwilioRest

log = logging.getLogger("hotline.outbound")

PENDING_TTL_S = 15 * 60  # ringing + answering-machine time, generously
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]


class OutboundCallError(HotlineError):
    """Twilio refused to place the call."""


@dataclass(frozen=True, slots=True)
class PlacedCall:
    call_sid: str
    business_slug: str
    to_number: str
    from_number: str
    status: str


class OutboundDialer:
    def __init__(self, settings: Settings, registry: CallRegistry,
                 config: ConfigCache, greetings: GreetingCache, rest: TwilioRest) -> None:
        self._settings = settings
        self._registry = registry
        self._config = config
        self._greetings = greetings
        self._rest = rest
        self._pending_by_sid: dict[str, str] = {}

    async def place(self, *, business_slug: str, to_number: str, template: str,
                    variables: dict[str, str], from_number: str | None = None) -> PlacedCall:
        business = self._config.business(business_slug)
        if business is None:
            raise UnknownNumber(f"no business {business_slug!r}")
        caller_id = from_number or (business.phone_numbers[0] if business.phone_numbers else "")
        if not caller_id:
            raise OutboundCallError(f"business {business_slug!r} has no number to call from")
        plan = build_outbound_plan(self._settings, business, template_name=template,
                                   variables=variables, from_number=caller_id,
                                   to_number=to_number, created_epoch_ms=time.time() * 1000)
        if self._settings.greeting_cache:
            # Rendered while the phone rings; the answered webhook uses them if ready.
            self._greetings.ensure_soon(plan.greeting, plan.voice)
            if plan.voicemail:
                self._greetings.ensure_soon(plan.voicemail, plan.voice)
        pending_id = secrets.token_urlsafe(12)
        await self._registry.put_pending(pending_id, plan, PENDING_TTL_S)
        options: dict[str, Any] = {}
        if plan.amd:
            # Async AMD: the call connects at once (the greeting is not held by Twilio);
            # the verdict arrives at /twilio/amd, after the beep for a machine.
            options = {"machine_detection": "DetectMessageEnd", "async_amd": "true",
                       "async_amd_status_callback": self._settings.public("/twilio/amd")}
        try:
            call = await self._rest.call(self._rest.client.calls.create_async(
                to=to_number,
                from_=caller_id,
                url=self._settings.public(f"/twilio/voice?outbound={pending_id}"),
                status_callback=self._settings.public("/twilio/status"),
                status_callback_event=STATUS_EVENTS,
                **options,
            ), "place the call")
        except TwilioApiError as exc:
            await self._registry.take_pending(pending_id)
            raise OutboundCallError(str(exc)) from None
        self._pending_by_sid[call.sid] = pending_id
        log.info("outbound call %s placed for %s to %s (template %s)", call.sid, business_slug,
                 to_number, template)
        return PlacedCall(call.sid, business_slug, to_number, caller_id, call.status)

    async def forget(self, call_sid: str) -> None:
        """The call ended: drop its plan if it was never answered."""
        pending_id = self._pending_by_sid.pop(call_sid, None)
        if pending_id is not None:
            await self._registry.take_pending(pending_id)
