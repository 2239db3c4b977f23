"""Placing an outbound call for the API (/api/calls and /api/v1/calls share it): refuse
while draining, dial through the `OutboundDialer`, and record the call as placed. An unknown
business (`UnknownNumber`), template (`KeyError`) or a missing variable (`TemplateError`)
is left to the route to answer, each in its own format."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import HTTPException

from hotline.core.record import CallRecord
from hotline.services import Services
from hotline.telephony.outbound import OutboundCallError, PlacedCall


async def place_call(services: Services, *, business: str, to: str, template: str,
                     variables: dict[str, str], from_number: str | None) -> PlacedCall:
    if services.drain.draining:
        # The load balancer sends the retry to an instance that is not shutting down.
        raise HTTPException(status_code=503, detail="this instance is shutting down; retry",
                            headers={"Retry-After": "1"})
    try:
        placed = await services.dialer.place(
            business_slug=business, to_number=to, template=template, variables=variables,
            from_number=from_number)
    except OutboundCallError as exc:
        raise HTTPException(status_code=502, detail=str(exc)) from None
    services.recorder.submit(CallRecord(
        call_sid=placed.call_sid, business_slug=placed.business_slug, direction="outbound",
        from_number=placed.from_number, to_number=placed.to_number, status=placed.status,
        outcome=None, started_at=datetime.now(UTC), ended_at=None,
        template_name=template, variables=variables))
    return placed
