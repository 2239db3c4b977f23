"""X-Twilio-Signature checks with the twilio SDK's RequestValidator."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator


class SignatureChecker:
    def __init__(self, auth_token: str, public_url: str) -> None:
        self._validator = RequestValidator(auth_token)
        self._public_url = public_url.rstrip("/")

    def public_url_for(self, path: str, query: str) -> str:
        """The URL Twilio was configured with (as Twilio saw it, not as a proxy forwards it)."""
        return self._public_url + path + (f"?{query}" if query else "")

    def valid_form(self, path: str, query: str, params: Mapping[str, str],
                   signature: str | None) -> bool:
        if not signature:
            return False
        return bool(self._validator.validate(self.public_url_for(path, query), dict(params),
                                             signature))

    def valid_stream_upgrade(self, stream_url: str, signature: str) -> bool:
        """A WebSocket upgrade is signed like a GET. Which scheme Twilio signs (wss or
        https) is not documented, so both are accepted."""
        candidates = [stream_url]
        for ws, http in (("wss://", "https://"), ("ws://", "http://")):
            if stream_url.startswith(ws):
                candidates.append(http + stream_url[len(ws):])
        return any(self._validator.validate(url, {}, signature) for url in candidates)
