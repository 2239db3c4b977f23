"""The Realtime GA `session` object for a call: μ-law both ways, server VAD, transcription."""

from __future__ import annotations

from typing import Any

from hotline.plan import CallPlan


def session_config(plan: CallPlan, instructions: str, model: str) -> dict[str, Any]:
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
                    "create_response": True,
                    "interrupt_response": True,
                },
                "transcription": {"model": plan.transcription_model, "language": plan.language},
            },
            "output": {"format": {"type": "audio/pcmu"}, "voice": plan.voice},
        },
    }
