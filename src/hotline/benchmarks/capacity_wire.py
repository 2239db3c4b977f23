"""RFC 6455 at its leanest, for the capacity benchmark's load generator.

Both sides the benchmark plays (Twilio's media-stream client, the realtime engine's server)
speak real WebSockets over real sockets, so the server under test cannot tell them from the
real ones; but a general library costs ~20 µs a message, as much as the server it loads.
Here a frame is built by prefixing a header to pre-encoded bytes, and the client masks with
the all-zero key (a valid key: the payload goes out as is). No extensions, no fragmentation
on send; received fragments and control frames are handled as the RFC says.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Callable
from typing import cast

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
_ZERO_MASK = b"\x00\x00\x00\x00"


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


try:  # websockets (uvicorn's) ships it in C: the leanest XOR at hand
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - a platform without its C extension
    from websockets.utils import apply_mask as _apply_mask


def _head(n: int, opcode: int, masked: bool) -> bytes:
    bit = 0x80 if masked else 0
    if n < 126:
        return bytes((0x80 | opcode, bit | n))
    if n < 65536:
        return bytes((0x80 | opcode, bit | 126)) + n.to_bytes(2, "big")
    return bytes((0x80 | opcode, bit | 127)) + n.to_bytes(8, "big")


def frame(payload: bytes, opcode: int = TEXT, *, masked: bool = False) -> bytes:
    """One final frame; `masked` (a client's): the all-zero key, so the payload is as is."""
    return _head(len(payload), opcode, masked) + (_ZERO_MASK if masked else b"") + payload


def random_masked_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """One final client frame masked as RFC 6455 §5.3 asks of a real client (a fresh,
    unpredictable key per frame): what a relay to the real API must pay, unlike the
    harness, which may use the all-zero key."""
    key = os.urandom(4)
    return _head(len(payload), opcode, True) + key + _apply_mask(payload, key)


def unmask(data: bytes, key: bytes) -> bytes:
    if key == _ZERO_MASK or not data:
        return data
    return _apply_mask(data, key)


class FrameReader:
    """Bytes in, complete messages out as (opcode, payload); `peek` unmasks only the first
    bytes of a text message and may say it needs no more (the engine reads an append's
    type and the first samples, not its whole payload)."""

    __slots__ = ("_buffer", "_fragments", "_opcode")

    def __init__(self) -> None:
        self._buffer = b""
        self._fragments: list[bytes] = []
        self._opcode = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer + data if self._buffer else data
        out: list[tuple[int, bytes]] = []
        pos, end = 0, len(buffer)
        while end - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = int.from_bytes(buffer[pos + 2:pos + 4], "big")
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(buffer[pos + 2:pos + 10], "big")
                head = 10
            masked = b1 & 0x80
            total = head + (4 if masked else 0) + n
            if end - pos < total:
                break
            start = pos + head + (4 if masked else 0)
            payload = buffer[start:start + n]
            if masked:
                payload = unmask(payload, buffer[pos + head:pos + head + 4])
            pos += total
            opcode, fin = b0 & 0x0F, b0 & 0x80
            if opcode >= 0x8:  # control frames are never fragmented
                out.append((opcode, payload))
            elif not fin:
                if opcode != CONTINUATION:
                    self._opcode = opcode
                self._fragments.append(payload)
            elif opcode == CONTINUATION:
                self._fragments.append(payload)
                out.append((self._opcode, b"".join(self._fragments)))
                self._fragments = []
            else:
                out.append((opcode, payload))
        self._buffer = buffer[pos:]
        return out


OnMessage = Callable[[int, bytes], None]


class MessageCount:
    """Data messages this process sent and received over all its connections: the same
    messages the server under test received and sent (every one of them crosses it)."""

    __slots__ = ("messages",)

    def __init__(self) -> None:
        self.messages = 0


MESSAGE_COUNT = MessageCount()


class WsConnection(asyncio.Protocol):
    """An upgraded socket on either side: `send` pre-framed bytes, messages to `on_message`,
    pings answered, a close echoed. `handshake` is the HTTP part, done by the subclass."""

    masked = False  # a client masks

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader()
        self.open = False
        self.closed = asyncio.Event()
        self.on_message: OnMessage = lambda opcode, payload: None
        self._head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, data: bytes) -> None:
        """One pre-framed data message."""
        if self.open and self.transport is not None:
            self.transport.write(data)
            MESSAGE_COUNT.messages += 1

    def send_text(self, text: bytes) -> None:
        self.send(frame(text, TEXT, masked=self.masked))

    def close(self, code: int = 1000) -> None:
        self._close(code.to_bytes(2, "big"))

    def _close(self, status: bytes) -> None:
        """A close frame with `status` (its code, or none), then the socket closed."""
        if self.open and self.transport is not None:
            self.transport.write(frame(status, CLOSE, masked=self.masked))
            self.open = False
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self._head += data
            if b"\r\n\r\n" not in self._head:
                return
            head, _, rest = self._head.partition(b"\r\n\r\n")
            self._head = b""
            if not self.handshake(head):
                return
            data = rest
            if not data:
                return
        for opcode, payload in self.reader.feed(data):
            if opcode == PING:
                if self.open and self.transport is not None:
                    self.transport.write(frame(payload, PONG, masked=self.masked))
            elif opcode == CLOSE:
                self._close(payload[:2])  # the peer's code echoed
            elif opcode != PONG:
                MESSAGE_COUNT.messages += 1
                self.on_message(opcode, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.closed.set()

    def handshake(self, head: bytes) -> bool:
        raise NotImplementedError


class WsClient(WsConnection):
    """The client side (the phone): sends the upgrade request, waits for its 101."""

    masked = True

    def __init__(self, host: str, path: str, headers: dict[str, str]) -> None:
        super().__init__()
        self._key = base64.b64encode(os.urandom(16))
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {self._key.decode()}",
                 "Sec-WebSocket-Version: 13", *(f"{k}: {v}" for k, v in headers.items())]
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.upgraded: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.write(self._request)

    def handshake(self, head: bytes) -> bool:
        ok = head.startswith(b"HTTP/1.1 101") and accept_key(self._key) in head
        if ok:
            self.open = True
        elif self.transport is not None:
            self.transport.close()
        if not self.upgraded.done():
            self.upgraded.set_result(ok)
        return ok

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.upgraded.done():
            self.upgraded.set_result(False)


async def connect(host: str, port: int, path: str, headers: dict[str, str],
                  factory: Callable[[], WsClient] | None = None) -> WsClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        factory or (lambda: WsClient(f"{host}:{port}", path, headers)), host, port)
    if not await client.upgraded:
        raise ConnectionError(f"WebSocket upgrade to {path} refused")
    return client


class WsServerConnection(WsConnection):
    """The server side (the engine): answers the upgrade request of `path_prefix`, then
    `opened()`."""

    path_prefix = "/"

    def handshake(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        key = headers.get(b"sec-websocket-key")
        if (len(parts) < 2 or not parts[1].decode().startswith(self.path_prefix)
                or key is None):
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                self.transport.close()
            return False
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                             + accept_key(key) + b"\r\n\r\n")
        self.open = True
        self.opened(parts[1].decode(), headers)
        return True

    def opened(self, path: str, headers: dict[bytes, bytes]) -> None:
        pass
