"""Which tools a call offers: the enabled built-ins, then the business's HTTP tools.

One rule for both what the model is shown (`tool_definitions`) and what `Toolbox.run`
accepts (`find_tool`), so the model can't call a tool it was never offered.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from hotline.business import BUILTIN_TOOLS, HttpTool
from hotline.plan import CallPlan
from hotline.tools.builtin import BUILTINS, Builtin

if TYPE_CHECKING:
    from openai.types.realtime import RealtimeFunctionToolParam

EMPTY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}, "required": []}


def offered_tools(plan: CallPlan) -> dict[str, Builtin | HttpTool]:
    """Name to tool, in the order the model is shown them. Built-ins follow BUILTIN_TOOLS
    order; `transfer_to_human` needs a transfer number and `check_hours` opening hours;
    an HTTP tool can't shadow a built-in, and the first of two same-named HTTP tools wins."""
    offered: dict[str, Builtin | HttpTool] = {}
    for name in BUILTIN_TOOLS:
        if name not in plan.tools or name not in BUILTINS:
            continue
        if name == "transfer_to_human" and plan.transfer_number is None:
            continue
        if name == "check_hours" and not plan.opening_hours:
            continue  # nothing to answer from: don't spend a turn on an error
        offered[name] = BUILTINS[name]
    for tool in plan.http_tools:
        if tool.name not in offered and tool.name not in BUILTINS:
            offered[tool.name] = tool
    return offered


def find_tool(plan: CallPlan, name: str) -> Builtin | HttpTool | None:
    return offered_tools(plan).get(name)


def tool_parameters(tool: Builtin | HttpTool) -> dict[str, Any]:
    return tool.parameters or EMPTY_OBJECT_SCHEMA


def tool_definitions(plan: CallPlan) -> list[RealtimeFunctionToolParam]:
    """The Realtime `session.tools` list for this call (GA function tool shape). Pure and
    deterministic; each call returns fresh dicts the caller may change."""
    return [
        {"type": "function", "name": name, "description": tool.description,
         "parameters": copy.deepcopy(tool_parameters(tool))}
        for name, tool in offered_tools(plan).items()
    ]
