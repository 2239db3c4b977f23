"""What every dashboard page has: the request's session, its language, who is signed in,
and a way to render a template or redirect with the session cookie kept up to date.

Pages depend on `page` (anyone: the sign-in page) or `viewer` (signed in; otherwise a
redirect to the sign-in page). A form is read with `form_of`, which refuses it (403) when
its CSRF token is not the session's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.numbers import format_decimal
from fastapi import Depends, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hotline.admin.auth import Principal
from hotline.admin.dashboard.i18n import Lang, from_accept_language, parse_lang, translations
from hotline.admin.dashboard.session import SessionCodec, WebSession, csrf_matches
from hotline.services import Services

STATIC_PREFIX = "/static"
# Every page: our own scripts, styles and media only (no inline script, so an injected one
# cannot run), never framed by another site, forms only back to us.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class SignInRequired(Exception):
    """Raised by `viewer` for a browser not signed in: answered with a redirect."""

    def __init__(self, page: Page, next_url: str) -> None:
        self.page = page
        self.next_url = next_url


class PageError(Exception):
    """Answered with the error page: 404 for anything not found *or not yours*, 403 for a
    form whose CSRF token is wrong, 401 for a polled part of a page when signed out."""

    def __init__(self, status: int, page: Page) -> None:
        self.status = status
        self.page = page


def codec_of(request: Request) -> SessionCodec:
    codec: SessionCodec | None = getattr(request.app.state, "dashboard_sessions", None)
    if codec is None:
        codec = request.app.state.dashboard_sessions = SessionCodec(
            services_of(request).settings)
    return codec


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@dataclass
class Page:
    request: Request
    services: Services
    session: WebSession
    lang: Lang
    changed: bool  # the cookie must be written with the response

    @property
    def principal(self) -> Principal:
        """Who is signed in; only on a signed-in page (`viewer`), never a stranger's."""
        if not self.session.signed_in:
            raise RuntimeError("no principal: nobody is signed in on this page")
        return Principal(business=None if self.session.admin else self.session.business)

    @property
    def is_admin(self) -> bool:
        return self.session.admin

    def save(self, session: WebSession) -> None:
        self.session = session
        self.changed = True
        chosen = parse_lang(session.lang)
        if chosen is not None:
            self.lang = chosen

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = environment(self.lang).get_template(template).render(page=self, **context)
        response = HTMLResponse(html, status_code=status)
        self._finish(response)
        return response

    def redirect(self, url: str) -> RedirectResponse:
        response = RedirectResponse(url, status_code=303)
        self._finish(response)
        return response

    def not_found(self) -> PageError:
        return PageError(404, self)

    def _finish(self, response: Response) -> None:
        # Pages depend on the session (who, which language): no shared cache may keep them.
        response.headers["Cache-Control"] = "no-store"
        response.headers.update(SECURITY_HEADERS)
        if self.changed:
            codec_of(self.request).write(response, self.session)


async def page(request: Request) -> Page:
    found = codec_of(request).read(request)
    session = found or WebSession()
    lang = parse_lang(session.lang) or from_accept_language(
        request.headers.get("accept-language"))
    return Page(request, services_of(request), session, lang, changed=found is None)


async def viewer(current: Annotated[Page, Depends(page)]) -> Page:
    if not await _still_valid(current):
        if current.session.signed_in:  # no longer valid: forget who it was
            current.save(current.session.signed_out())
        request = current.request
        if request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        else:  # a form's action (POST only: back there would be a 405): the form's page
            target = _came_from(request)
        raise SignInRequired(current, target)
    return current


def _came_from(request: Request) -> str:
    """The page of this site a form was sent from (its Referer), else the calls."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc != request.url.netloc or not referer.path.startswith("/"):
        return "/calls"
    return referer.path + (f"?{referer.query}" if referer.query else "")


async def fragment_viewer(current: Annotated[Page, Depends(page)]) -> Page:
    """`viewer` for a part of a page that the page's script polls: signed out, it answers
    401 (the script reloads the page, which goes to the sign-in page), not a redirect that
    fetch() would follow and paste the sign-in page into the part, polling on forever."""
    try:
        return await viewer(current)
    except SignInRequired:
        raise PageError(401, current) from None


Viewer = Annotated[Page, Depends(viewer)]
FragmentViewer = Annotated[Page, Depends(fragment_viewer)]
AnyPage = Annotated[Page, Depends(page)]


async def _still_valid(current: Page) -> bool:
    """The session's key still opens the dashboard: not revoked, the admin token unchanged."""
    session = current.session
    if session.admin:
        mark = codec_of(current.request).admin_mark()
        return mark is not None and mark == session.admin_mark
    if session.business is None or session.key_prefix is None:
        return False
    stored = await current.services.store.find_api_key(session.key_prefix)
    return (stored is not None and stored.revoked_at is None
            and stored.business_slug == session.business)


async def form_of(current: Page) -> FormData:
    form = await current.request.form()
    token = form.get("csrf")
    if not csrf_matches(current.session, token if isinstance(token, str) else None):
        raise PageError(403, current)
    return form


def sign_in_url(next_url: str) -> str:
    return "/signin?next=" + quote(next_url, safe="/")


# -- templates ------------------------------------------------------------------------------
@cache
def environment(lang: Lang) -> Environment:
    directory = str(resources.files("hotline.admin.dashboard") / "templates")
    env = Environment(loader=FileSystemLoader(directory),
                      autoescape=select_autoescape(("html", "svg")),
                      extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    env.globals.update(lang=lang, Lang=Lang, static=STATIC_PREFIX)
    env.filters["when"] = lambda moment, tz="UTC": _when(moment, tz, lang)
    env.filters["day"] = lambda day: format_date(day, format="short", locale=lang.value)
    env.filters["number"] = lambda value, digits=0: format_decimal(
        round(value, digits), format=f"#,##0{'.' + '0' * digits if digits else ''}",
        locale=lang.value)
    return env


def _when(moment: datetime | None, timezone: str, lang: Lang) -> Markup:
    """A moment in the business's timezone and the interface's language, isolated left to
    right (a date and a time in Hebrew text otherwise come out in a jumbled order)."""
    if moment is None:
        return Markup("")
    try:
        zone = ZoneInfo(timezone or "UTC")
    except (ValueError, KeyError):
        zone = ZoneInfo("UTC")
    shown = format_datetime(moment, format="short", tzinfo=zone, locale=lang.value)
    return Markup('<bdi dir="ltr">{}</bdi>').format(shown)


def with_lang(session: WebSession, lang: Lang) -> WebSession:
    return replace(session, lang=lang.value)
