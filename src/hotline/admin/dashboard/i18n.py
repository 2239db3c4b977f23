"""The dashboard's own words in English and Hebrew: a gettext catalogue (`locale/`), and
which language a request gets.

The catalogue is the `.po` file itself, compiled in memory when first used (Babel), so
there is no build step and no binary in the repository. English is the source language
(its messages are the msgids). A request gets the language the browser chose in the
interface (kept in its session), else the best of its Accept-Language, else English.
"""

from __future__ import annotations

import enum
import io
from functools import cache
from importlib import resources

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

DOMAIN = "messages"


class Lang(enum.StrEnum):
    EN = "en"
    HE = "he"

    @property
    def direction(self) -> str:
        return "rtl" if self is Lang.HE else "ltr"

    @property
    def native_name(self) -> str:
        return {Lang.EN: "English", Lang.HE: "עברית"}[self]


DEFAULT = Lang.EN


@cache
def translations(lang: Lang) -> NullTranslations:
    if lang is Lang.EN:
        return NullTranslations()
    po_file = resources.files("hotline.admin.dashboard") / "locale" / lang.value / \
        "LC_MESSAGES" / f"{DOMAIN}.po"
    with po_file.open("rb") as source:
        catalog = read_po(source, locale=lang.value, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def parse_lang(value: str | None) -> Lang | None:
    if not value:
        return None
    primary = value.strip().lower().replace("_", "-").split("-")[0]
    if primary == "iw":  # Hebrew's old code, still sent by some browsers
        primary = "he"
    try:
        return Lang(primary)
    except ValueError:
        return None


def from_accept_language(header: str | None) -> Lang:
    """The best language of an Accept-Language header that we have (q-values honoured)."""
    best: tuple[float, Lang] | None = None
    for position, part in enumerate((header or "").split(",")):
        tag, *params = part.split(";")
        quality = _quality(params)
        lang = parse_lang(tag)
        if lang is None or quality is None or quality <= 0:
            continue
        # Equal q: the earlier one wins (the list is in the browser's order).
        ranked = (quality - position * 1e-6, lang)
        if best is None or ranked[0] > best[0]:
            best = ranked
    return best[1] if best is not None else DEFAULT


def _quality(params: list[str]) -> float | None:
    """A language range's q (1 when absent; None when malformed: the range is ignored)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                return None
            return quality if 0 <= quality <= 1 else None
    return 1.0
