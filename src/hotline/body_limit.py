"""A cap on HTTP request bodies: a pure ASGI middleware answering 413 without reading more.

Twilio's webhooks are small form posts (a few hundred bytes to ~2 kB) and the API's JSON
bodies are small too, so anything bigger is refused before it is buffered. A declared
`Content-Length` over the cap is refused without keeping a byte of the body (one over by
at most `LINGER_MAX_BODY_BYTES` is read to its end and dropped first, so that the client,
still sending, is not reset before it reads the 413); a chunked body
(or one whose length was not declared) is counted as it arrives and refused the moment it
passes the cap, whatever the headers said. The rest is never read: uvicorn closes the
connection after a response to a request whose body was not consumed.

The middleware owns the answer: if the app turns the refused read into a response of its
own (FastAPI reports a body it could not read as a 400), that response is replaced by the
413. WebSocket scopes pass through (their messages are capped by uvicorn's `ws_max_size`).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

WEBHOOK_MAX_BODY_BYTES = 64 * 1024
API_MAX_BODY_BYTES = 256 * 1024
# A declared body over its cap but not over this is read (and dropped) before the 413.
LINGER_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_LIMITS: tuple[tuple[str, int], ...] = (
    ("/twilio/", WEBHOOK_MAX_BODY_BYTES),
    ("/api/", API_MAX_BODY_BYTES),
    ("/businesses", API_MAX_BODY_BYTES),  # the dashboard's settings form: a business's prompts
)


class BodyTooLarge(Exception):
    """Raised into the app by `receive` when the body passes the cap."""


class BodyLimit:
    def __init__(self, app: ASGIApp, limits: Sequence[tuple[str, int]] = DEFAULT_LIMITS,
                 default: int = WEBHOOK_MAX_BODY_BYTES) -> None:
        self.app = app
        self._limits = tuple(limits)
        self._default = default

    def limit_for(self, path: str) -> int:
        return next((n for prefix, n in self._limits if path.startswith(prefix)),
                    self._default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            if declared <= LINGER_MAX_BODY_BYTES:
                # A client still sending a body the server will not read gets its
                # connection reset, often before it reads the answer: read a modest
                # overage to its end, so that it sees the 413 (a huge one is not read).
                await _discard_body(receive)
            await _refuse(send, limit)
            return
        received = 0
        refused = False  # the body passed the cap: the app's own answer is replaced
        answered = False  # something was sent to the client

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                raise BodyTooLarge  # the app asks again: it gets no more of the body
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if refused:
                return
            answered = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not refused:
                raise
        if refused and not answered:
            await _refuse(send, limit)


async def _discard_body(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses these before they get here
    return None


async def _refuse(send: Send, limit: int) -> None:
    body = f"request body larger than {limit} bytes\n".encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
