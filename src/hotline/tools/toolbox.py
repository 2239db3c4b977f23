"""Toolbox: runs one tool call for the call runner, off the media loop.

The runner starts `Toolbox.run` in its own task when the engine finishes a function call's
arguments, then hands the `ToolOutcome` back to the call core. `run` never raises (except
CancelledError, when the call ends first): every problem becomes `tool_error(...)`, which
the model hears and can talk about. Problems are logged at WARNING with the tool's name and
never the arguments (they may be personal data) or the signing secret.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from hotline.business import HttpTool
from hotline.logs import CallLog
from hotline.plan import CallPlan
from hotline.tools.arguments import ToolArgumentsError, check_arguments, parse_arguments
from hotline.tools.builtin import Builtin, BuiltinCall, BuiltinUnavailable
from hotline.tools.catalogue import find_tool, tool_parameters
from hotline.tools.http import call_http_tool
from hotline.tools.outcome import ToolOutcome, tool_error

MAX_LOGGED_NAME_CHARS = 64


def utc_now() -> datetime:
    return datetime.now(UTC)


class Toolbox:
    """The tools of one call. `http` is shared (its pool outlives calls); `signing_secret`
    is HOTLINE_TOOL_SIGNING_SECRET's value, None (or empty) when unset; `clock` gives the
    aware wall time for `check_hours` and for the request timestamp."""

    def __init__(self, plan: CallPlan, http: httpx.AsyncClient, *,
                 signing_secret: str | None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self._plan = plan
        self._http = http
        self._secret = signing_secret or None
        self._clock = clock
        self._log = CallLog(logging.getLogger("hotline.tools"),
                            {"call_sid": plan.call_sid, "business": plan.business_slug})

    async def run(self, name: str, arguments_json: str, *, taken_ms: int) -> ToolOutcome:
        """Run tool `name` with the model's `arguments` string; `taken_ms` is ms since the
        webhook arrived (stamped on a taken message)."""
        tool = find_tool(self._plan, name)
        if tool is None:
            self._log.warning("tool %r is not offered on this call",
                              name[:MAX_LOGGED_NAME_CHARS])
            return tool_error(name, "no such tool on this call: use only the tools you have")
        try:
            arguments = parse_arguments(arguments_json)
            check_arguments(tool_parameters(tool), arguments)
        except ToolArgumentsError as exc:
            self._log.warning("tool %s called with bad arguments: %s", name, exc)
            return tool_error(name, str(exc))
        try:
            if isinstance(tool, HttpTool):
                return await call_http_tool(
                    self._http, tool, arguments, plan=self._plan, secret=self._secret,
                    timestamp_s=int(self._clock().timestamp()), log=self._log)
            return self._run_builtin(tool, arguments, taken_ms)
        except BuiltinUnavailable as exc:
            self._log.warning("tool %s unavailable: %s", name, exc)
            return tool_error(name, "this tool is not available right now")
        except Exception as exc:  # the never-raises boundary: a bug in a tool ends here
            self._log.warning("tool %s failed: %s", name, type(exc).__name__)
            return tool_error(name, "the tool failed")

    def _run_builtin(self, tool: Builtin, arguments: dict[str, Any],
                     taken_ms: int) -> ToolOutcome:
        # Built-ins are pure and synchronous: nothing to time out. One that ever awaits I/O
        # gets an `asyncio.timeout` here (HTTP tools have theirs).
        call = BuiltinCall(plan=self._plan, arguments=arguments, taken_ms=taken_ms,
                           now=self._clock())
        return tool.run(call)
