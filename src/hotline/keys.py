"""Business API keys: `hk_<prefix>_<secret part>`, stored only as an HMAC.

The prefix (8 hex characters) is not secret: it names the key in `hotline keys list` and
finds its row. The store keeps HMAC-SHA256(HOTLINE_KEY_SECRET, key), never the key. A keyed
hash rather than argon2: the keys are 256 random bits, so a slow hash buys nothing against
guessing, and a database leaked without the server's secret still yields nothing to try.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from hotline.errors import ApiKeyError

KEY_PATTERN = re.compile(r"^hk_([0-9a-f]{8})_[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class NewKey:
    key: str  # shown once, never stored
    prefix: str
    key_hash: str


def require_secret(secret: str | None) -> str:
    if not secret:
        raise ApiKeyError("HOTLINE_KEY_SECRET is not set: set it (a long random string) "
                          "before creating API keys; only a hash keyed with it is stored")
    return secret


def new_key(secret: str | None) -> NewKey:
    server_secret = require_secret(secret)
    key = f"hk_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"
    prefix = key_prefix(key)
    assert prefix is not None
    return NewKey(key=key, prefix=prefix, key_hash=key_hash(server_secret, key))


def key_prefix(key: str) -> str | None:
    """The key's prefix, or None when it is not shaped like one of our keys."""
    found = KEY_PATTERN.match(key)
    return found.group(1) if found else None


def key_hash(secret: str, key: str) -> str:
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def key_matches(secret: str, key: str, stored_hash: str) -> bool:
    """Constant-time comparison of the presented key's HMAC with the stored one."""
    return hmac.compare_digest(key_hash(secret, key).encode(), stored_hash.encode())
