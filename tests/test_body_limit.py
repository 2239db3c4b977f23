"""BodyLimit at the ASGI level: what a server would hand it, whatever the headers claim.

uvicorn never hands an app more than the declared Content-Length (test_e2e_bad_input.py
covers the middleware over real sockets); these cover what the middleware itself trusts:
nothing but the bytes it counts.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Message, Receive, Scope, Send

from hotline.body_limit import LINGER_MAX_BODY_BYTES, BodyLimit, BodyTooLarge

LIMIT = 1000


def scope(path: str = "/twilio/voice", length: int | None = None) -> Scope:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


class Body:
    """The server's side: the body in chunks; counts what the app took."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.taken = 0

    async def receive(self) -> Message:
        chunk = self.chunks.pop(0)
        self.taken += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}


class Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])


async def reads_all_then_answers(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body, and (as FastAPI does) reports a body it could not
    read as a 400 of its own."""
    try:
        while (await receive()).get("more_body"):
            pass
        status = 200
    except Exception:  # FastAPI's "There was an error parsing the body"
        status = 400
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def run(app: Any, scope_: Scope, body: Body) -> Sent:
    sent = Sent()
    await BodyLimit(app, limits=[("/api/", 10 * LIMIT)], default=LIMIT)(
        scope_, body.receive, sent)
    return sent


async def test_a_body_longer_than_its_content_length_is_counted_not_trusted() -> None:
    body = Body(b"a" * 600, b"b" * 600, b"c" * 600)
    sent = await run(reads_all_then_answers, scope(length=10), body)
    assert sent.status == 413  # the app's own 400 was replaced
    assert len(sent.messages) == 2 and body.taken == 1200  # stopped at the chunk past it


async def test_a_declared_length_far_over_the_cap_is_refused_unread() -> None:
    body = Body(b"a" * 10)
    sent = await run(reads_all_then_answers, scope(length=LINGER_MAX_BODY_BYTES + 1), body)
    assert sent.status == 413 and body.taken == 0


async def test_a_modest_overage_is_read_and_dropped_before_the_413() -> None:
    """So that a client still sending it is not reset before it reads the answer."""
    body = Body(b"a" * 10, b"b" * 10)
    sent = await run(reads_all_then_answers, scope(length=LIMIT + 1), body)
    assert sent.status == 413 and body.taken == 20


async def test_an_app_that_lets_the_error_escape_still_gets_a_413() -> None:
    async def reads_all(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass

    body = Body(b"a" * 800, b"b" * 800, b"c")
    sent = await run(reads_all, scope(), body)
    assert sent.status == 413 and body.taken == 1600


async def test_each_path_has_its_cap_and_bodies_under_it_pass() -> None:
    body = Body(b"a" * 600, b"b" * 600)
    assert (await run(reads_all_then_answers, scope("/api/v1/calls"), body)).status == 200
    assert (await run(reads_all_then_answers, scope("/twilio/voice", length=LIMIT),
                      Body(b"a" * LIMIT))).status == 200


async def test_a_second_read_after_the_refusal_gets_nothing_more() -> None:
    reads: list[str] = []

    async def keeps_reading(scope: Scope, receive: Receive, send: Send) -> None:
        for _ in range(3):
            try:
                await receive()
                reads.append("ok")
            except BodyTooLarge:
                reads.append("refused")

    body = Body(b"a" * 1001, b"more", b"more")
    sent = await run(keeps_reading, scope(), body)
    assert reads == ["refused", "refused", "refused"] and body.taken == 1001
    assert sent.status == 413


async def test_websockets_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    await BodyLimit(app)({"type": "websocket", "path": "/twilio/media", "headers": []},
                         Body().receive, Sent())
    assert seen == ["websocket"]
