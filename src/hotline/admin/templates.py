"""/api/v1/businesses/{slug}/templates: a business's outbound call templates.

A template is a greeting with {placeholders} (filled by the variables a call is placed
with), extra instructions, and the message left on an answering machine. The rules are
`check_template`'s (the YAML import and the store run the same). A business key manages its
own business's templates; another business's answer 404. Every change reloads the config
cache, so the next call placed uses it.
"""

from __future__ import annotations

import re
from dataclasses import replace

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from hotline.admin.v1 import (
    COMMON_RESPONSES,
    NOT_FOUND,
    Caller,
    Problem,
    Strict,
    invalid,
    invalid_business,
    not_found,
    services_of,
    visible_business,
)
from hotline.business import GreetingTiming, TemplateConfig
from hotline.errors import BusinessNotFound, InvalidBusiness
from hotline.services import Services
from hotline.store.validation import check_greeting_template, check_template

router = APIRouter(prefix="/api/v1/businesses/{slug}/templates", tags=["templates"],
                   responses={**COMMON_RESPONSES, **NOT_FOUND})
# The store names a template's fields `templates[name].greeting`; here they are top level.
_STORE_PREFIX = re.compile(r"^templates(\[[^\]]*\])?\.")


class TemplateIn(Strict):
    name: str = Field(description="letters, digits, '-' or '_' (at most 64)")
    greeting: str = Field(description="what the agent says first, with {placeholders}")
    instructions: str = Field("", description="extra instructions for this call's agent")
    voicemail: str = Field("", description="left after the beep on an answering machine "
                                           "({placeholders} too); empty: hang up")
    greeting_timing: GreetingTiming | None = Field(
        None, description="null: the business's")


class TemplatePatch(Strict):
    greeting: str | None = None
    instructions: str | None = None
    voicemail: str | None = None
    greeting_timing: GreetingTiming | None = None


class TemplateOut(BaseModel):
    name: str
    greeting: str
    instructions: str
    voicemail: str
    greeting_timing: GreetingTiming | None
    placeholders: list[str] = Field(
        description="the variables a call placed with this template must give")


def template_out(template: TemplateConfig) -> TemplateOut:
    names = dict.fromkeys((*check_greeting_template(template.greeting_template),
                           *check_greeting_template(template.voicemail_template)))
    return TemplateOut(name=template.name, greeting=template.greeting_template,
                       instructions=template.instructions,
                       voicemail=template.voicemail_template,
                       greeting_timing=template.greeting_timing, placeholders=list(names))


def _find(templates: tuple[TemplateConfig, ...], name: str) -> TemplateConfig | None:
    return next((t for t in templates if t.name == name), None)


async def _save(services: Services, slug: str, template: TemplateConfig) -> TemplateOut:
    try:
        saved = await services.store.save_template(slug, check_template(template))
    except InvalidBusiness as exc:
        raise invalid_business(exc, strip=_STORE_PREFIX) from None
    except BusinessNotFound:
        raise not_found(f"business {slug}") from None  # deleted meanwhile
    await services.config.load()  # this instance at once; others within their refresh
    return template_out(saved)


# -- routes ---------------------------------------------------------------------------------
@router.get("")
async def list_templates(slug: str, request: Request, caller: Caller) -> list[TemplateOut]:
    business = await visible_business(services_of(request), caller, slug)
    return [template_out(t) for t in business.templates]


@router.post("", status_code=201, responses={
    409: {"model": Problem, "description": "the business has a template of this name"}})
async def create_template(slug: str, body: TemplateIn, request: Request,
                          caller: Caller) -> TemplateOut:
    services = services_of(request)
    business = await visible_business(services, caller, slug)
    if _find(business.templates, body.name) is not None:
        raise HTTPException(status_code=409, detail=f"template {body.name} exists")
    return await _save(services, slug, TemplateConfig(
        name=body.name, greeting_template=body.greeting, instructions=body.instructions,
        voicemail_template=body.voicemail, greeting_timing=body.greeting_timing))


@router.get("/{name}")
async def get_template(slug: str, name: str, request: Request, caller: Caller) -> TemplateOut:
    business = await visible_business(services_of(request), caller, slug)
    template = _find(business.templates, name)
    if template is None:
        raise not_found(f"template {name}")
    return template_out(template)


@router.patch("/{name}")
async def update_template(slug: str, name: str, body: TemplatePatch, request: Request,
                          caller: Caller) -> TemplateOut:
    """Only the fields given change; `greeting_timing: null` follows the business again."""
    services = services_of(request)
    business = await visible_business(services, caller, slug)
    template = _find(business.templates, name)
    if template is None:
        raise not_found(f"template {name}")
    values = body.model_dump(exclude_unset=True)
    nulls = [key for key in ("greeting", "instructions", "voicemail")
             if key in values and values[key] is None]
    if nulls:
        raise invalid(*((["body", key], "may not be null") for key in nulls))
    changes = {"greeting_template": values.get("greeting"),
               "instructions": values.get("instructions"),
               "voicemail_template": values.get("voicemail")}
    template = replace(template, **{k: v for k, v in changes.items() if v is not None})
    if "greeting_timing" in values:
        template = replace(template, greeting_timing=values["greeting_timing"])
    return await _save(services, slug, template)


@router.delete("/{name}", status_code=204)
async def delete_template(slug: str, name: str, request: Request, caller: Caller) -> Response:
    services = services_of(request)
    await visible_business(services, caller, slug)
    if not await services.store.delete_template(slug, name):
        raise not_found(f"template {name}")
    await services.config.load()
    return Response(status_code=204)
