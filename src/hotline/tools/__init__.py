"""The tool runtime: what the model may call on a call, and running those calls.

    tool_definitions(plan)       the Realtime `session.tools` list for the call
    Toolbox(plan, http, ...)     .run(name, arguments_json, taken_ms=...) -> ToolOutcome
    ToolOutcome / ToolEffect     what the model is told; END_CALL / TRANSFER for the core
    tool_error(name, problem)    the error shape the model gets
    sign_tool_request / verify_tool_signature   for HTTP tool receivers (and tests)

Modules: outcome (results), arguments (decode + check), builtin (the built-ins), catalogue
(which tools a call offers), signing (HMAC headers), http (HTTP tools), toolbox (dispatch).
"""

from hotline.tools.catalogue import tool_definitions
from hotline.tools.outcome import ToolEffect, ToolOutcome, tool_error
from hotline.tools.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign_tool_request,
    verify_tool_signature,
)
from hotline.tools.toolbox import Toolbox

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "ToolEffect",
    "ToolOutcome",
    "Toolbox",
    "sign_tool_request",
    "tool_definitions",
    "tool_error",
    "verify_tool_signature",
]
