"""The model's tool arguments: decoded once and checked against the tool's schema.

Only what a handler relies on is checked: the arguments are a JSON object, every `required`
name is present, and a present argument has the primitive `type` its property declares.
Problems name the argument, never its value (arguments may be personal data).
"""

from __future__ import annotations

from typing import Any

import orjson

from hotline.errors import HotlineError

MAX_ARGUMENTS_BYTES = 16 * 1024

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


class ToolArgumentsError(HotlineError):
    """The model called a tool with arguments that don't fit its schema (the message is
    safe to log and to show the model: it names arguments, not values)."""


def parse_arguments(arguments_json: str) -> dict[str, Any]:
    """Decode `response.function_call_arguments.done`'s `arguments`; blank means `{}`."""
    if len(arguments_json) > MAX_ARGUMENTS_BYTES:
        raise ToolArgumentsError(f"arguments are longer than {MAX_ARGUMENTS_BYTES} bytes")
    if not arguments_json.strip():
        return {}
    try:
        arguments = orjson.loads(arguments_json)
    except orjson.JSONDecodeError:
        raise ToolArgumentsError("arguments are not valid JSON") from None
    if not isinstance(arguments, dict):
        raise ToolArgumentsError("arguments must be a JSON object")
    return arguments


def check_arguments(schema: dict[str, Any], arguments: dict[str, Any]) -> None:
    """Required names present, declared primitive types respected; else ToolArgumentsError."""
    required = schema.get("required")
    for name in required if isinstance(required, list) else ():
        if name not in arguments:
            raise ToolArgumentsError(f"missing required argument {name!r}")
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return
    for name, value in arguments.items():
        spec = properties.get(name)
        declared = spec.get("type") if isinstance(spec, dict) else None
        expected = _JSON_TYPES.get(declared) if isinstance(declared, str) else None
        if expected is None:  # undeclared, untyped or a type list: not ours to judge
            continue
        # bool is an int in Python, not in JSON schema.
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            raise ToolArgumentsError(f"argument {name!r} must be of type {declared}")
