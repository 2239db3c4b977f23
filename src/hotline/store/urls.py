"""Database URLs as users write them, turned into the async drivers Hotline runs on.

`postgresql://…` and `postgres://…` become `postgresql+asyncpg://…`; `sqlite:///x.db` becomes
`sqlite+aiosqlite:///x.db`. Passwords only ever leave this module masked (`***`).
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from hotline.errors import StoreUnavailable

_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def normalise_database_url(url: str | URL) -> URL:
    """The URL with its async driver; any other driver is refused (`StoreUnavailable`)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # make_url's message repeats the URL, password included.
        raise StoreUnavailable(
            "database URL is not a URL such as sqlite:///./hotline.db or postgresql://user@host/db"
        ) from None
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise StoreUnavailable(
            f"database URL {mask_url(parsed)}: Hotline runs on SQLite (sqlite+aiosqlite) "
            "or PostgreSQL (postgresql+asyncpg)"
        )
    return parsed.set(drivername=driver)


def mask_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)
