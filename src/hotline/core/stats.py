"""Counters of one call, kept by the core and reported with its record (and to metrics)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class CallStats:
    media_in: int = 0  # caller frames received
    media_dropped_warmup: int = 0  # caller frames dropped right after pickup
    media_held_for_amd: int = 0  # callee frames not sent: awaiting the verdict, or a machine's
    # Appends of caller audio sent to the engine: one a frame forwarded, fewer with
    # quiet_audio_batch_ms (its quiet frames go several to an append).
    audio_appends: int = 0
    deltas_out: int = 0  # agent audio chunks sent to Twilio
    deltas_dropped: int = 0  # agent audio of a dropped response, or before the stream
    barge_ins: int = 0
    barge_ins_ignored_cooldown: int = 0  # caller turns in the echo cooldown, left to the gate
    noise_turns_ignored: int = 0
    tool_calls: int = 0
    tool_errors: int = 0  # tool calls answered with an error (bad arguments, a failing tool)
    engine_errors: int = 0
    # Skipped as off-protocol (counted by the runner; see hotline.metrics): messages from
    # Twilio's media stream and from the engine's socket.
    malformed_twilio: int = 0
    malformed_engine: int = 0
    # The engine link (issue 10): sessions opened, attempts that failed, drops mid-call and
    # resumes after them, caller audio not kept while reconnecting (the buffer was full).
    engine_connects: int = 0  # counted by the runner
    engine_connect_failures: int = 0  # counted by the runner
    engine_drops: int = 0
    engine_resumes: int = 0
    engine_audio_dropped: int = 0  # counted by the runner, in 20 ms frames

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
