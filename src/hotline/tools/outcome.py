"""What a tool call comes to: what the model is told, and what the call core must do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from hotline.core.record import LeadMessage
from hotline.core.tool_ledger import ToolEffect


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    output: dict[str, Any]  # what the model is told; JSON-able
    effect: ToolEffect = ToolEffect.NONE
    message: LeadMessage | None = None  # set by take_message
    error: bool = False

    def output_json(self) -> str:
        """The `output` string of the `function_call_output` item (compact JSON)."""
        return orjson.dumps(self.output).decode()


def tool_error(name: str, problem: str) -> ToolOutcome:
    """The one error shape the model ever gets. `problem` is read by the model, so it says
    what went wrong and, where it helps, what to do instead; it never quotes arguments."""
    return ToolOutcome(output={"error": problem, "tool": name}, error=True)
