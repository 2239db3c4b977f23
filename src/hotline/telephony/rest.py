"""The twilio SDK's REST client, async, pointed at `HOTLINE_TWILIO_API_URL` (the real API or
the simulator). One per server: outbound calls and call control share its connection pool."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from hotline.errors import TwilioApiError
from hotline.settings import Settings

# The SDK's async client sets no timeout of its own.
TWILIO_API_TIMEOUT_S = 15.0
T = TypeVar("T")


class TwilioRest:
    def __init__(self, settings: Settings) -> None:
        self._http = AsyncTwilioHttpClient()
        self.client = Client(settings.twilio_account_sid,
                             settings.twilio_auth_token.get_secret_value(),
                             http_client=self._http)
        self.client.api.base_url = settings.twilio_api_url.rstrip("/")

    async def call(self, request: Awaitable[T], what: str) -> T:
        """Await one SDK request with a timeout; every failure becomes `TwilioApiError`
        (whose message never carries credentials)."""
        try:
            async with asyncio.timeout(TWILIO_API_TIMEOUT_S):
                return await request
        except TwilioRestException as exc:
            raise TwilioApiError(f"Twilio refused to {what}: {exc.msg} (code {exc.code})") \
                from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # The exception's name only: aiohttp's reprs can carry the request's headers,
            # Authorization (account SID and auth token) included.
            raise TwilioApiError(f"Twilio's API could not be reached to {what}: "
                                 f"{type(exc).__name__}") from None

    async def close(self) -> None:
        await self._http.close()
