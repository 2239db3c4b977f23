"""/api/v1/businesses: create, read, list, update and delete a business.

The request models only shape the JSON; every rule of what a valid business is lives in
`hotline.store.validation.check_business` (the same check the YAML import and the store
run). Its `InvalidBusiness("field: reason")` becomes a 422 in FastAPI's own error format,
the field as a path under `body`. A saved change reloads the config cache at once (and so
its listeners, e.g. the greeting cache), so the next call uses it.

Tenants: the admin may do everything. A business key reads and updates its own business
only; another business answers 404, exactly as one that does not exist. Creating and
deleting are admin-only: a business key gets 403 on its own business (it is allowed to
know that one exists) and 404 on any other.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import Field

from hotline.admin.auth import Principal
from hotline.admin.v1 import (
    COMMON_RESPONSES,
    Caller,
    Strict,
    invalid_business,
    not_found,
    services_of,
    visible_business,
)
from hotline.business import (
    DEFAULT_RECORDING_RETENTION_DAYS,
    DEFAULT_TOOLS,
    BusinessConfig,
    GreetingTiming,
    HttpTool,
)
from hotline.errors import DuplicateNumber, InvalidBusiness
from hotline.services import Services
from hotline.store.validation import check_business

router = APIRouter(prefix="/api/v1/businesses", tags=["businesses"],
                   responses=COMMON_RESPONSES)
ADMIN_ONLY = "only the admin may create or delete a business"


class Prompt(Strict):
    role: str = Field(description="who the agent is (compact prompt)")
    tone: str = Field("", description="compact prompt")
    greeting_rules: str = Field("", description="compact prompt: how to open the call")
    knowledge: str = Field("", description="full prompt")
    policies: str = Field("", description="full prompt")
    faq: str = Field("", description="full prompt")


class PromptPatch(Strict):
    role: str | None = None
    tone: str | None = None
    greeting_rules: str | None = None
    knowledge: str | None = None
    policies: str | None = None
    faq: str | None = None


class HttpToolModel(Strict):
    name: str
    description: str
    url: str
    parameters: dict[str, Any] = Field(description="JSON schema of the arguments (an object)")
    timeout_s: float = 5.0


class _Settings(Strict):
    """The fields a business may change (all but its slug)."""

    name: str
    language: str = Field(description="'he', 'en', 'en-US', …")
    voice: str
    greeting: str
    numbers: list[str] = Field(description="E.164 numbers that ring this business")
    prompt: Prompt
    bot_speaks_first: bool = True
    timezone: str = "UTC"
    hours: dict[str, str] = Field(
        default_factory=dict,
        description='weekday -> "HH:MM-HH:MM[,HH:MM-HH:MM]" in `timezone`; unlisted: closed')
    tools: list[str] = Field(default_factory=lambda: list(DEFAULT_TOOLS))
    transfer_number: str | None = None
    dtmf: dict[str, str] = Field(default_factory=dict, description="key -> action")
    http_tools: list[HttpToolModel] = Field(default_factory=list)
    greeting_timing: GreetingTiming = GreetingTiming.IMMEDIATE
    max_call_duration_s: int = 600
    recording: bool = Field(False, description="keep both sides of each call as a WAV")
    recording_retention_days: int = Field(
        DEFAULT_RECORDING_RETENTION_DAYS,
        description="days a recording is kept after its call (1-3650)")


class BusinessCreate(_Settings):
    slug: str


class BusinessOut(BusinessCreate):
    pass


class BusinessPatch(Strict):
    """Only the fields given change; `prompt` parts likewise."""

    name: str | None = None
    language: str | None = None
    voice: str | None = None
    greeting: str | None = None
    numbers: list[str] | None = None
    prompt: PromptPatch | None = None
    bot_speaks_first: bool | None = None
    timezone: str | None = None
    hours: dict[str, str] | None = None
    tools: list[str] | None = None
    transfer_number: str | None = None
    dtmf: dict[str, str] | None = None
    http_tools: list[HttpToolModel] | None = None
    greeting_timing: GreetingTiming | None = None
    max_call_duration_s: int | None = None
    recording: bool | None = None
    recording_retention_days: int | None = None


# -- model <-> BusinessConfig ----------------------------------------------------------------
_PROMPT_PARTS = ("role", "tone", "greeting_rules", "knowledge", "policies", "faq")
_PLAIN = ("name", "language", "voice", "greeting", "bot_speaks_first", "timezone",
          "transfer_number", "greeting_timing", "max_call_duration_s", "recording",
          "recording_retention_days")


def _config_fields(values: dict[str, Any]) -> dict[str, Any]:
    """BusinessConfig keyword arguments from a (partial) request body, as a dict."""
    out = {key: values[key] for key in _PLAIN if key in values}
    if "numbers" in values:
        out["phone_numbers"] = tuple(values["numbers"])
    for part, text in (values.get("prompt") or {}).items():
        out[part] = text
    if "hours" in values:
        out["opening_hours"] = tuple(values["hours"].items())
    if "tools" in values:
        out["tools"] = tuple(values["tools"])
    if "dtmf" in values:
        out["dtmf_actions"] = tuple(values["dtmf"].items())
    if "http_tools" in values:
        out["http_tools"] = tuple(HttpTool(**tool) for tool in values["http_tools"])
    return out


def business_out(business: BusinessConfig) -> BusinessOut:
    return BusinessOut(
        slug=business.slug, name=business.name, language=business.language,
        voice=business.voice, greeting=business.greeting,
        numbers=list(business.phone_numbers),
        prompt=Prompt(**{part: getattr(business, part) for part in _PROMPT_PARTS}),
        bot_speaks_first=business.bot_speaks_first, timezone=business.timezone,
        hours=dict(business.opening_hours), tools=list(business.tools),
        transfer_number=business.transfer_number, dtmf=dict(business.dtmf_actions),
        http_tools=[HttpToolModel(name=t.name, description=t.description, url=t.url,
                                  parameters=t.parameters, timeout_s=t.timeout_s)
                    for t in business.http_tools],
        greeting_timing=business.greeting_timing,
        max_call_duration_s=business.max_call_duration_s,
        recording=business.recording,
        recording_retention_days=business.recording_retention_days,
    )


def _check(business: BusinessConfig) -> BusinessConfig:
    try:
        return check_business(business)
    except InvalidBusiness as exc:
        raise invalid_business(exc) from None


async def _save(services: Services, caller: Principal, business: BusinessConfig
                ) -> BusinessConfig:
    try:
        saved = await services.store.save_business(_check(business))
    except DuplicateNumber as exc:
        # The admin is told whose number it is; a business key only that it is taken (the
        # other tenant's slug is not its to know).
        detail = (str(exc) if caller.business is None
                  else f"{exc.number} already belongs to another business")
        raise HTTPException(status_code=409, detail=detail) from None
    await services.config.load()  # this instance at once; others within their refresh
    return saved


# -- routes ---------------------------------------------------------------------------------
@router.get("")
async def list_businesses(request: Request, caller: Caller) -> list[BusinessOut]:
    """Every business for the admin; a business key's own only."""
    businesses = await services_of(request).store.list_businesses()
    return [business_out(b) for b in businesses if caller.may_see(b.slug)]


@router.post("", status_code=201, responses={403: {"description": ADMIN_ONLY},
                                             409: {"description": "slug or number taken"}})
async def create_business(body: BusinessCreate, request: Request,
                          caller: Caller) -> BusinessOut:
    if caller.business is not None:
        raise HTTPException(status_code=403, detail=ADMIN_ONLY)
    services = services_of(request)
    values = body.model_dump()
    business = BusinessConfig(slug=body.slug, **_config_fields(values))
    business = _check(business)
    if await services.store.get_business(business.slug) is not None:
        raise HTTPException(status_code=409, detail=f"business {business.slug} exists")
    return business_out(await _save(services, caller, business))


@router.get("/{slug}", responses={404: {"description": "no such business (or not yours)"}})
async def get_business(slug: str, request: Request, caller: Caller) -> BusinessOut:
    return business_out(await visible_business(services_of(request), caller, slug))


@router.patch("/{slug}", responses={404: {"description": "no such business (or not yours)"},
                                    409: {"description": "a number is another's"}})
async def update_business(slug: str, body: BusinessPatch, request: Request,
                          caller: Caller) -> BusinessOut:
    services = services_of(request)
    current = await visible_business(services, caller, slug)
    values = body.model_dump(exclude_unset=True)
    nulls: list[tuple[str, ...]] = [("body", key) for key, value in values.items()
                                    if value is None and key != "transfer_number"]
    # A prompt part too (`{"prompt": {"role": null}}`): None is no text to check or keep.
    nulls += [("body", "prompt", part) for part, text in (values.get("prompt") or {}).items()
              if text is None]
    if nulls:
        raise RequestValidationError([{"loc": loc, "msg": "may not be null",
                                       "type": "value_error"} for loc in nulls])
    return business_out(await _save(services, caller,
                                     replace(current, **_config_fields(values))))


@router.delete("/{slug}", status_code=204,
               responses={403: {"description": ADMIN_ONLY},
                          404: {"description": "no such business (or not yours)"}})
async def delete_business(slug: str, request: Request, caller: Caller) -> Response:
    services = services_of(request)
    await visible_business(services, caller, slug)
    if caller.business is not None:
        raise HTTPException(status_code=403, detail=ADMIN_ONLY)
    if not await services.store.delete_business(slug):
        raise not_found(f"business {slug}")
    await services.config.load()
    return Response(status_code=204)
