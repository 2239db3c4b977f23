"""HTTP tools: POST the model's arguments, signed, to the business's URL; relay the reply.

The request body is ``{"tool", "arguments", "call_sid", "business"}`` (compact JSON) with the
headers from `hotline.tools.signing`. A 2xx JSON reply reaches the model as
``{"result": <reply>}`` (a 204 as ``{"result": null}``); anything else becomes an error the
model can talk about. Redirects are not followed: a signed body goes only where configured.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import orjson

from hotline.business import HttpTool
from hotline.plan import CallPlan
from hotline.tools.outcome import ToolOutcome, tool_error
from hotline.tools.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_tool_request

MAX_REPLY_BYTES = 8 * 1024
SECRET_ENV = "HOTLINE_TOOL_SIGNING_SECRET"


class _ReplyTooLarge(Exception):
    """A 2xx reply over MAX_REPLY_BYTES (internal to this module)."""


def request_body(tool: HttpTool, arguments: dict[str, Any], plan: CallPlan) -> bytes:
    return orjson.dumps({"tool": tool.name, "arguments": arguments,
                         "call_sid": plan.call_sid, "business": plan.business_slug})


def signed_headers(secret: str, timestamp_s: int, body: bytes) -> dict[str, str]:
    timestamp = str(timestamp_s)
    return {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign_tool_request(secret, timestamp, body)}


async def call_http_tool(http: httpx.AsyncClient, tool: HttpTool, arguments: dict[str, Any],
                         *, plan: CallPlan, secret: str | None, timestamp_s: int,
                         log: logging.LoggerAdapter[logging.Logger]) -> ToolOutcome:
    """One signed POST, bounded by `tool.timeout_s` overall. Never raises except
    CancelledError; logs problems with the tool name and host only (the URL's path or
    query may hold a key, the arguments personal data)."""
    if not secret:
        log.warning("HTTP tool %s not called: %s is not set", tool.name, SECRET_ENV)
        return tool_error(tool.name, f"this tool is not available right now ({SECRET_ENV} "
                                     "is not set on the server)")
    body = request_body(tool, arguments, plan)
    headers = signed_headers(secret, timestamp_s, body)
    where = _host(tool.url)
    try:
        async with asyncio.timeout(tool.timeout_s):
            status, reply = await _post(http, tool, body, headers)
    except (TimeoutError, httpx.TimeoutException):
        log.warning("HTTP tool %s at %s timed out after %gs", tool.name, where, tool.timeout_s)
        return tool_error(tool.name, f"timed out after {tool.timeout_s:g}s")
    except _ReplyTooLarge:
        log.warning("HTTP tool %s at %s replied with over %d bytes", tool.name, where,
                    MAX_REPLY_BYTES)
        return tool_error(tool.name, f"the reply was larger than {MAX_REPLY_BYTES} bytes")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        log.warning("HTTP tool %s at %s failed: %s", tool.name, where, type(exc).__name__)
        return tool_error(tool.name, "could not reach the service")
    if not 200 <= status < 300:
        log.warning("HTTP tool %s at %s answered HTTP %d", tool.name, where, status)
        return tool_error(tool.name, f"the service answered HTTP {status}")
    if status == 204:
        return ToolOutcome(output={"result": None})
    try:
        result = orjson.loads(reply)
    except orjson.JSONDecodeError:
        log.warning("HTTP tool %s at %s replied with something other than JSON",
                    tool.name, where)
        return tool_error(tool.name, "the service's reply was not JSON")
    return ToolOutcome(output={"result": result})


async def _post(http: httpx.AsyncClient, tool: HttpTool, body: bytes,
                headers: dict[str, str]) -> tuple[int, bytes]:
    """Status and body, reading at most MAX_REPLY_BYTES of a 2xx body (others unread)."""
    async with http.stream("POST", tool.url, content=body, headers=headers,
                           timeout=tool.timeout_s, follow_redirects=False) as response:
        if not response.is_success:
            return response.status_code, b""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_REPLY_BYTES:
            raise _ReplyTooLarge
        reply = bytearray()
        async for chunk in response.aiter_bytes():
            reply += chunk
            if len(reply) > MAX_REPLY_BYTES:
                raise _ReplyTooLarge
        return response.status_code, bytes(reply)


def _host(url: str) -> str:
    try:
        return httpx.URL(url).host or "?"
    except httpx.InvalidURL:
        return "?"
