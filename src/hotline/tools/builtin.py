"""The built-in tools: their definitions for the model and their (pure) handlers.

A handler gets the checked arguments and the call's facts in a `BuiltinCall` and returns a
`ToolOutcome`; it never does I/O. Ending and transferring the call are effects the call core
performs after it has told the model, so the handlers only say which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hotline.core.record import LeadMessage
from hotline.errors import HotlineError
from hotline.hours import hours_answer
from hotline.plan import CallPlan
from hotline.tools.outcome import ToolEffect, ToolOutcome, tool_error

MAX_NAME_CHARS = 200
MAX_PHONE_CHARS = 40
MAX_MESSAGE_CHARS = 2000


class BuiltinUnavailable(HotlineError):
    """A built-in that can't run on this call for a configuration reason (safe to log)."""


@dataclass(frozen=True, slots=True)
class BuiltinCall:
    plan: CallPlan
    arguments: dict[str, Any]  # already checked against the tool's `parameters`
    taken_ms: int  # ms since the webhook arrived
    now: datetime  # timezone-aware


@dataclass(frozen=True, slots=True)
class Builtin:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments
    run: Callable[[BuiltinCall], ToolOutcome]


def _object(**properties: str) -> dict[str, Any]:
    """An object schema of required string properties, each with its description."""
    return {
        "type": "object",
        "properties": {name: {"type": "string", "description": text}
                       for name, text in properties.items()},
        "required": list(properties),
    }


def _end_call(call: BuiltinCall) -> ToolOutcome:
    return ToolOutcome(
        output={"ok": True,
                "next": "Say a short, warm goodbye now. The call ends when you finish."},
        effect=ToolEffect.END_CALL)


def _transfer_to_human(call: BuiltinCall) -> ToolOutcome:
    if call.plan.transfer_number is None:
        return tool_error("transfer_to_human", "no one can take the call now: "
                          "offer to take a message instead")
    return ToolOutcome(
        output={"ok": True, "next": "Tell the caller in one short sentence that you are "
                                    "connecting them to a person now."},
        effect=ToolEffect.TRANSFER)


def _take_message(call: BuiltinCall) -> ToolOutcome:
    args = call.arguments
    message = args["message"].strip()[:MAX_MESSAGE_CHARS]
    if not message:
        return tool_error("take_message", "the message is empty: ask the caller what "
                                          "they would like to pass on")
    lead = LeadMessage(name=args["name"].strip()[:MAX_NAME_CHARS],
                       phone=args["phone"].strip()[:MAX_PHONE_CHARS],
                       message=message, taken_ms=call.taken_ms)
    return ToolOutcome(output={"ok": True, "saved": True}, message=lead)


def _check_hours(call: BuiltinCall) -> ToolOutcome:
    plan = call.plan
    if not plan.opening_hours:
        return tool_error("check_hours", "opening hours are not configured")
    try:
        answer = hours_answer(plan.opening_hours, plan.timezone, call.now)
    except ValueError as exc:  # bad hours or timezone: configuration, not the caller
        raise BuiltinUnavailable(f"opening hours are misconfigured: {exc}") from None
    return ToolOutcome(output=answer)


BUILTINS: dict[str, Builtin] = {b.name: b for b in (
    Builtin(
        "end_call",
        "Hang up the call. Use it when the caller says goodbye, asks you to hang up, or the "
        "conversation is clearly over. You will then say a short goodbye.",
        _object(reason="Why the call is ending, in a few words (e.g. 'caller said goodbye')."),
        _end_call),
    Builtin(
        "transfer_to_human",
        "Connect the caller to a person at the business. Use it when the caller asks for a "
        "person, or when you cannot help with what they need.",
        _object(reason="Why the caller needs a person, in a few words."),
        _transfer_to_human),
    Builtin(
        "take_message",
        "Save a message for the business to follow up on. First collect what the caller "
        "wants, their name and a callback number, and read them back to confirm.",
        _object(name="The caller's name; empty string if they did not give one.",
                phone="Callback number as the caller gave it; empty string if none.",
                message="What the caller wants the business to know or do, complete enough "
                        "to act on without calling back to ask."),
        _take_message),
    Builtin(
        "check_hours",
        "Get the business's opening hours: the local time, whether it is open now, when it "
        "closes or next opens, and the weekly schedule. Use it before answering any "
        "question about opening hours.",
        _object(),
        _check_hours),
)}
