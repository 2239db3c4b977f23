"""The Realtime GA `session` object for a call: μ-law both ways, server VAD, transcription,
and the business's tools.

Server VAD detects turns but decides nothing: `create_response` and `interrupt_response`
are off because the call core judges each turn itself (a 100 ms cough or the agent's own
echo must neither cut the agent off nor get an answer) and asks for responses itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hotline.plan import CallPlan
from hotline.tools import tool_definitions

if TYPE_CHECKING:
    from openai.types.realtime import RealtimeSessionCreateRequestParam


def session_config(plan: CallPlan, instructions: str,
                   model: str) -> RealtimeSessionCreateRequestParam:
    return {
        "type": "realtime",
        "model": model,
        "instructions": instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                # G.711 μ-law is byte for byte what Twilio sends: no transcoding anywhere.
                "format": {"type": "audio/pcmu"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": plan.vad_threshold,
                    "prefix_padding_ms": plan.vad_prefix_padding_ms,
                    "silence_duration_ms": plan.vad_silence_ms,
                    "create_response": False,
                    "interrupt_response": False,
                },
                "transcription": {"model": plan.transcription_model, "language": plan.language},
            },
            "output": {"format": {"type": "audio/pcmu"}, "voice": plan.voice},
        },
        "tools": list(tool_definitions(plan)),  # widened to the function-or-MCP union
        "tool_choice": "auto",
    }
