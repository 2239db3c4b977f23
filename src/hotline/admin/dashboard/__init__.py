"""The owner's dashboard at `/`: server-rendered pages (Jinja2), a signed cookie session,
English and Hebrew. See the README's "Dashboard" section."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from hotline.admin.dashboard import access, business_pages, call_pages, other_pages
from hotline.admin.dashboard.web import STATIC_PREFIX, PageError, SignInRequired, sign_in_url


def install(app: FastAPI) -> None:
    for module in (access, call_pages, business_pages, other_pages):
        app.include_router(module.router)
    static = resources.files("hotline.admin.dashboard") / "static"
    app.mount(STATIC_PREFIX, StaticFiles(directory=str(static)), name="dashboard-static")

    @app.exception_handler(SignInRequired)
    async def to_sign_in(_request: Request, exc: SignInRequired) -> Response:
        return exc.page.redirect(sign_in_url(exc.next_url))

    @app.exception_handler(PageError)
    async def error_page(_request: Request, exc: PageError) -> Response:
        return exc.page.render("error.html", status=exc.status, status_code=exc.status)
