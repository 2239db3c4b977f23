"""GET /api/v1/businesses/{slug}/stats: a business's calls over a range of days.

Calls per day (days in the business's timezone), the outcome split, the greeting latency
(stream start to the greeting's first audio) p50/p95 per path (cached, warm, cold) and the
average duration. Another tenant's business answers 404.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from hotline.admin.v1 import (
    COMMON_RESPONSES,
    NOT_FOUND,
    Caller,
    invalid,
    not_found,
    services_of,
    utc,
    visible_business,
)
from hotline.core.greeting_path import GreetingPath
from hotline.errors import BusinessNotFound

router = APIRouter(prefix="/api/v1/businesses", tags=["businesses"],
                   responses={**COMMON_RESPONSES, **NOT_FOUND})
DEFAULT_DAYS = 30


class DayCount(BaseModel):
    date: date
    calls: int


class GreetingLatencyOut(BaseModel):
    path: GreetingPath
    calls: int = Field(description="calls greeted this way (with a latency recorded)")
    p50_ms: float | None
    p95_ms: float | None


class StatsOut(BaseModel):
    business: str
    timezone: str = Field(description="the business's: the days are its days")
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    calls: int
    per_day: list[DayCount] = Field(description="every day of the range, zeros included")
    outcomes: dict[str, int] = Field(description="outcome -> calls; 'unknown': not ended")
    greeting: list[GreetingLatencyOut]
    average_duration_s: float | None = Field(description="of the calls that ended")


@router.get("/{slug}/stats", responses={422: {"description": "a bad range"}})
async def business_stats(
    slug: str,
    request: Request,
    caller: Caller,
    start: Annotated[datetime | None, Query(
        alias="from", description=f"inclusive (no offset: UTC); default: {DEFAULT_DAYS} "
                                  "days before `to`")] = None,
    end: Annotated[datetime | None, Query(
        alias="to", description="exclusive (no offset: UTC); default: now")] = None,
) -> StatsOut:
    services = services_of(request)
    await visible_business(services, caller, slug)
    end = utc(end, "to") or datetime.now(UTC)
    try:
        start = utc(start, "from") or end - timedelta(days=DEFAULT_DAYS)
    except OverflowError:
        raise invalid((["query", "to"], "too early")) from None
    if end <= start:
        raise invalid((["query", "to"], "must be after `from`"))
    try:
        stats = await services.store.business_stats(slug, start, end)
    except BusinessNotFound:
        raise not_found(f"business {slug}") from None  # deleted meanwhile
    except ValueError as exc:  # too long a range, or out of the years kept
        raise invalid((["query", "from"], str(exc))) from None
    return StatsOut(
        business=stats.business_slug, timezone=stats.timezone, from_=stats.start,
        to=stats.end, calls=stats.calls,
        per_day=[DayCount(date=day, calls=count) for day, count in stats.per_day],
        outcomes=stats.outcomes,
        greeting=[GreetingLatencyOut(path=g.path, calls=g.calls, p50_ms=g.p50_ms,
                                     p95_ms=g.p95_ms) for g in stats.greeting],
        average_duration_s=stats.average_duration_s)
