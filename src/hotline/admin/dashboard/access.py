"""Signing in and out of the dashboard, and choosing its language.

A key opens a session: the admin token (every business) or a business key (its own
business only). Failed attempts count against the client address with the API's limiter,
so the form is no way around its rate limit.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from hotline.admin.auth import failure_limiter, principal_of_key
from hotline.admin.dashboard.i18n import parse_lang
from hotline.admin.dashboard.session import WebSession
from hotline.admin.dashboard.web import AnyPage, codec_of, form_of, with_lang
from hotline.keys import key_prefix

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)


def _safe_next(value: object) -> str:
    """Only a path of this site (never `//host` or a URL elsewhere)."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//") \
            and "\\" not in value:
        return value
    return "/calls"


@router.get("/")
async def home(page: AnyPage) -> Response:
    return page.redirect("/calls" if page.session.signed_in else "/signin")


@router.get("/signin")
async def sign_in_form(page: AnyPage,
                       next_url: Annotated[str, Query(alias="next")] = "/calls") -> Response:
    return page.render("signin.html", next_url=_safe_next(next_url), error=None)


@router.post("/signin")
async def sign_in(page: AnyPage) -> Response:
    form = await form_of(page)
    next_url = _safe_next(form.get("next"))
    request = page.request
    address = request.client.host if request.client else "unknown"
    limiter = failure_limiter(request)
    if limiter.retry_after(address) is not None:
        return page.render("signin.html", status=429, next_url=next_url, error="throttled")
    key = form.get("key")
    key = key.strip() if isinstance(key, str) else ""
    found = await principal_of_key(page.services, key) if key else None
    if found is None:
        limiter.failed(address)
        log.warning("dashboard sign-in failed from %s", address)  # never the key
        return page.render("signin.html", status=401, next_url=next_url, error="wrong_key")
    if found.business is None:
        page.save(codec_of(request).admin_session(page.session))
    else:
        page.save(WebSession(lang=page.session.lang, business=found.business,
                             key_prefix=key_prefix(key)))
    return page.redirect(next_url)


@router.post("/signout")
async def sign_out(page: AnyPage) -> Response:
    if not page.session.signed_in:
        # Already out (the session expired, or the cookie was lost): nothing to change, and
        # the form's token, of the old session, cannot match; not a "form expired" page.
        return page.redirect("/signin")
    await form_of(page)
    page.save(page.session.signed_out())
    return page.redirect("/signin")


@router.post("/lang")
async def choose_language(page: AnyPage) -> Response:
    form = await form_of(page)
    lang = parse_lang(str(form.get("lang", "")))
    if lang is not None:
        page.save(with_lang(page.session, lang))
    return page.redirect(_safe_next(form.get("next")))
