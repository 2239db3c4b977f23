"""The tool ledger: tool calls running for the call, and their answers held back.

A tool's answer goes to the model once the response that called it is done and every tool
that response called has answered; then one reply follows (or the closing line). Tools of a
reply the caller cut off do not run: the model is told so.
"""

from __future__ import annotations

import enum

from hotline.core.commands import AddFunctionOutput

INTERRUPTED_OUTPUT = '{"error": "not done: the caller interrupted"}'


class ToolEffect(enum.Enum):
    """What the call core does itself once the model has been told a tool's outcome."""

    NONE = "none"
    END_CALL = "end_call"
    TRANSFER = "transfer"


class ToolLedger:
    def __init__(self) -> None:
        self._running: dict[str, str] = {}  # call_id -> the response that called it
        self._outputs: dict[str, list[AddFunctionOutput]] = {}  # response_id -> answers
        self._reply_after: set[str] = set()  # responses whose answers want a reply

    @property
    def busy(self) -> bool:
        """A tool is running: its answer is on its way (that is no silence)."""
        return bool(self._running)

    def called(self, response_id: str, call_id: str) -> None:
        self._outputs.setdefault(response_id, [])
        self._running[call_id] = response_id

    def refused(self, response_id: str, call_id: str) -> None:
        """A tool of an interrupted reply: not run, the model is told why."""
        self._outputs.setdefault(response_id, []).append(
            AddFunctionOutput(call_id, INTERRUPTED_OUTPUT))

    def finished(self, call_id: str, output_json: str) -> str:
        """A tool answered; the response that called it ("" if unknown)."""
        response_id = self._running.pop(call_id, "")
        self._outputs.setdefault(response_id, []).append(AddFunctionOutput(call_id, output_json))
        return response_id

    def reply_after(self, response_id: str) -> None:
        self._reply_after.add(response_id)

    def release(self, response_id: str, active_id: str | None
                ) -> tuple[list[AddFunctionOutput], bool] | None:
        """The response's answers and whether a reply should follow, once it is done and
        every tool it called has answered; None until then."""
        if (active_id == response_id or response_id not in self._outputs
                or response_id in self._running.values()):
            return None
        wants_reply = response_id in self._reply_after
        self._reply_after.discard(response_id)
        return self._outputs.pop(response_id), wants_reply
