"""The dashboard's browser session: a signed cookie, and the CSRF token that every form
carries back.

The cookie holds who signed in (the admin, or a business by its key's prefix), the CSRF
token and the interface language, signed with a secret derived from HOTLINE_KEY_SECRET
(else HOTLINE_API_TOKEN; with neither, a random secret of this process, so sessions end at
a restart). It never holds a key. Each request checks it again: a business key revoked, or
an admin token changed, ends the sessions it opened. HttpOnly (no script reads it),
SameSite=Lax (other sites' forms do not carry it), Secure when the public URL is https.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass, field, replace

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from hotline.settings import Settings

COOKIE = "hotline_session"
MAX_AGE_S = 12 * 3600  # a signed-in browser signs in again after this
_SALT = "hotline-dashboard-session"


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True, slots=True)
class WebSession:
    """What the cookie says. `business` and `admin` are both empty when signed out."""

    csrf: str = field(default_factory=new_csrf)
    lang: str | None = None  # chosen in the interface; None: the browser's Accept-Language
    admin: bool = False
    business: str | None = None
    key_prefix: str | None = None  # the business key that opened it (checked per request)
    admin_mark: str | None = None  # a digest of the admin token that opened it

    @property
    def signed_in(self) -> bool:
        return self.admin or self.business is not None

    def signed_out(self) -> WebSession:
        """The same browser, signed out: a new CSRF token, its language kept."""
        return WebSession(lang=self.lang)


class SessionCodec:
    def __init__(self, settings: Settings) -> None:
        self._secret = _secret(settings)
        self._serializer = URLSafeTimedSerializer(self._secret, salt=_SALT)
        self._secure = settings.public_url.startswith("https://")
        self._admin_token = (settings.api_token.get_secret_value()
                             if settings.api_token is not None else None)

    def read(self, request: Request) -> WebSession | None:
        """The request's session, or None (no cookie, a forged or an expired one)."""
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=MAX_AGE_S)
        except BadSignature:  # SignatureExpired is one
            return None
        if not isinstance(data, dict):
            return None
        try:
            return WebSession(**data)
        except TypeError:
            return None

    def write(self, response: Response, session: WebSession) -> None:
        response.set_cookie(COOKIE, self._serializer.dumps(asdict(session)), max_age=MAX_AGE_S,
                            path="/", httponly=True, samesite="lax", secure=self._secure)

    def admin_mark(self) -> str | None:
        """A digest naming the current admin token (None: no admin token is set). Keyed with
        the session secret: the cookie is signed, not encrypted, and a plain hash of the token
        in it could be guessed offline."""
        if self._admin_token is None:
            return None
        return hmac.new(self._secret.encode(), self._admin_token.encode(),
                        hashlib.sha256).hexdigest()[:32]

    def admin_session(self, session: WebSession) -> WebSession:
        return replace(session.signed_out(), admin=True, admin_mark=self.admin_mark())


def csrf_matches(session: WebSession, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(session.csrf.encode(),
                                                         presented.encode())


def _secret(settings: Settings) -> str:
    """Derived with scrypt (once per process, ~50 ms): every visitor gets a cookie signed with
    it, so a fast derivation would let anyone test guesses of the token offline quickly."""
    for source in (settings.key_secret, settings.api_token):
        if source is not None:
            return hashlib.scrypt(source.get_secret_value().encode(), salt=_SALT.encode(),
                                  n=2 ** 14, r=8, p=1, dklen=32).hex()
    return secrets.token_hex(32)
