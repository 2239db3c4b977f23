"""What every /api/v1 router shares: who asks, the services, strict request models, and
`InvalidBusiness("field: reason")` turned into FastAPI's own 422 (the field as its path).

Tenants: a business key sees its own business only; anything of another tenant answers
404, exactly as something that does not exist.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.requests import HTTPConnection
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hotline.admin.auth import Principal, principal
from hotline.business import BusinessConfig
from hotline.errors import InvalidBusiness
from hotline.services import Services

Caller = Annotated[Principal, Depends(principal)]


NUL_REFUSED = "must not contain NUL characters"


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class Readable(BaseModel):
    """A request body whose text the database can keep: PostgreSQL's text takes no NUL
    character, so one is a 422 naming the field, not a failed write."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        if _has_nul(value):
            raise ValueError(NUL_REFUSED)
        return value


class Strict(Readable):
    """A request body: an unknown field is a 422, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


def readable_params(connection: HTTPConnection) -> None:
    """A route dependency: path and query parameters with a NUL character are a 422 (the
    database could not compare them), named like FastAPI's own errors."""
    errors = [(["path", name], NUL_REFUSED) for name, value in connection.path_params.items()
              if _has_nul(value)]
    errors += [(["query", name], NUL_REFUSED) for name, value in
               connection.query_params.multi_items() if _has_nul(value) or _has_nul(name)]
    if errors:
        raise invalid(*errors)


class Problem(BaseModel):
    """An error answer (`HTTPException`'s shape)."""

    detail: str


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: body, query or path, then the field")
    msg: str = Field(description="the reason")
    type: str


class ValidationProblem(BaseModel):
    """A 422 in FastAPI's own format."""

    detail: list[FieldError]


# The answers every /api/v1 route may give besides its own, for the OpenAPI schema.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "a body that cannot be read as JSON (not UTF-8)"},
    401: {"model": Problem, "description": "missing or wrong bearer token"},
    429: {"model": Problem, "description": "too many failed attempts from this address"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such thing (or another tenant's)"}}


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def not_found(what: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"no {what}")


async def visible_business(services: Services, caller: Principal, slug: str) -> BusinessConfig:
    """The business, if the caller may see it; else 404, as if it did not exist."""
    if not caller.may_see(slug):
        raise not_found(f"business {slug}")
    business = await services.store.get_business(slug)
    if business is None:
        raise not_found(f"business {slug}")
    return business


def not_own_number(business: BusinessConfig) -> str:
    """Why a business key may not place a call from a number (the reason, for `from`)."""
    return f"must be one of business {business.slug}'s numbers: {', '.join(business.phone_numbers)}"


def scope(caller: Principal, wanted: str | None) -> tuple[bool, str | None]:
    """The business a list is limited to: (False, _) when a business key asks for another
    business's (the list is empty, as for one that does not exist)."""
    if caller.business is None:
        return True, wanted
    return wanted in (None, caller.business), caller.business


def invalid(*errors: tuple[Sequence[str | int], str]) -> RequestValidationError:
    """A 422 in FastAPI's format: (loc, reason) pairs."""
    return RequestValidationError(
        [{"loc": tuple(loc), "msg": reason, "type": "value_error"} for loc, reason in errors])


# `hours: …`, `numbers[0]: …`, `http_tools[book].url: …`, `dtmf[5]: …`
_FIELD_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_.\[\]\-*#]*): (.*)", re.DOTALL)


def invalid_business(exc: InvalidBusiness, *, strip: re.Pattern[str] | None = None
                     ) -> RequestValidationError:
    """`InvalidBusiness("field: reason")` as a 422 whose loc is the field's path under
    `body`; `strip` removes a leading part of the field the API does not have (e.g. the
    store's `templates[x].` for a template sent on its own)."""
    text = str(exc)
    match = _FIELD_RE.fullmatch(text)
    if match is None:
        return invalid((["body"], text))
    field, reason = match.groups()
    if strip is not None:
        field = strip.sub("", field, count=1)
    loc: list[str | int] = ["body"]
    for name, index in re.findall(r"([^.\[\]]+)|\[([^\]]*)\]", field):
        if name:
            loc.append(name)
        else:
            loc.append(int(index) if index.isdigit() else index)
    return invalid((loc, reason))


def utc(moment: datetime | None, field: str, where: str = "query") -> datetime | None:
    """A moment from a request in UTC; one without an offset is taken as UTC."""
    if moment is None:
        return None
    try:
        return (moment.replace(tzinfo=UTC) if moment.tzinfo is None
                else moment.astimezone(UTC))
    except (OverflowError, ValueError):
        raise invalid(([where, field], "out of the range of dates this server keeps")
                      ) from None
