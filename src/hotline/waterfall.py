"""A call's latency timeline as a waterfall, and its transcript, as Rich tables.

Each timeline stage is a moment, in ms since the webhook arrived. Its bar runs from the
previous stage to this one, drawn to scale, so the long gaps stand out. The row of
`first_audio_to_caller` (the moment the caller hears the agent) is highlighted, and the
caption gives the number the latency budget is about: stream start → first audio to caller.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from hotline.core.record import TimelineStage, TranscriptTurn

# The stages every call records, in the order they normally happen (design notes).
LATENCY_STAGES = (
    "webhook_received",
    "plan_ready",
    "twiml_sent",
    "engine_connected",
    "engine_configured",
    "stream_start",
    "greeting_requested",
    "first_audio_from_engine",
    "first_audio_to_caller",
    "greeting_done",
    "prompt_upgraded",
)
HIGHLIGHT_STAGE = "first_audio_to_caller"
_BAR = "█"
_TICK = "▏"  # a stage reached in (almost) no time after the previous one


def render_waterfall(
    timeline: Sequence[TimelineStage], *, title: str = "", width: int = 40
) -> Table:
    """One row per stage, in time order: ms since the webhook, Δ from the previous, a bar."""
    table = Table(title=title or None, title_justify="left", expand=False)
    table.add_column("stage")
    table.add_column("ms", justify="right")
    table.add_column("Δ ms", justify="right")
    table.add_column("", no_wrap=True, min_width=width)
    stages = sorted(timeline, key=lambda stage: stage.ms)  # stable: ties keep their order
    if not stages:
        table.caption = "no timeline recorded"
        return table
    start_ms = min(0.0, stages[0].ms)
    span_ms = max(stages[-1].ms - start_ms, 1e-9)
    previous_ms = start_ms
    for index, stage in enumerate(stages):
        highlight = stage.stage == HIGHLIGHT_STAGE
        begin = round((previous_ms - start_ms) / span_ms * width)
        end = round((stage.ms - start_ms) / span_ms * width)
        bar = Text(" " * begin)
        bar.append(
            _BAR * (end - begin) if end > begin else _TICK,
            style="bold green" if highlight else "cyan",
        )
        name = stage.stage + (f" ({stage.detail})" if stage.detail else "")
        table.add_row(
            name,
            f"{stage.ms:.1f}",
            f"{stage.ms - previous_ms:+.1f}" if index else "",
            bar,
            style="bold" if highlight else ("dim" if stage.stage not in LATENCY_STAGES else None),
        )
        previous_ms = stage.ms
    gap = stream_to_first_audio_ms(stages)
    if gap is not None:
        table.caption = f"stream start → first audio to caller: {gap:.1f} ms"
    return table


def stream_to_first_audio_ms(timeline: Sequence[TimelineStage]) -> float | None:
    """The number that matters, when both stages were recorded."""
    moments = {stage.stage: stage.ms for stage in reversed(timeline)}  # first occurrence wins
    if "stream_start" not in moments or HIGHLIGHT_STAGE not in moments:
        return None
    return moments[HIGHLIGHT_STAGE] - moments["stream_start"]


def render_transcript(turns: Sequence[TranscriptTurn], *, title: str = "") -> Table:
    """Who said what, when (seconds since the webhook); cut-off agent turns are marked."""
    table = Table(title=title or None, title_justify="left")
    table.add_column("at s", justify="right")
    table.add_column("speaker")
    table.add_column("text", overflow="fold")
    for turn in turns:
        text = Text(turn.text)
        if turn.interrupted:
            text.append(" [interrupted]", style="italic yellow")
        table.add_row(
            f"{turn.started_ms / 1000:.1f}",
            Text(turn.speaker, style="magenta" if turn.speaker == "agent" else "blue"),
            text,
        )
    if not turns:
        table.caption = "no transcript recorded"
    return table
