"""The geometry of the dashboard's charts, drawn by the templates as inline SVG: a call's
latency waterfall, columns (calls per day) and horizontal bars (latency, outcomes).

Pure functions of the numbers: coordinates in the SVG's own units (the SVG scales to its
box through its viewBox), no I/O and no markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from hotline.core.record import TimelineStage
from hotline.waterfall import HIGHLIGHT_STAGE, LATENCY_STAGES

WIDTH = 640
LABEL_WIDTH = 230  # the stage names, left of the bars
ROW_HEIGHT = 20
AXIS_HEIGHT = 22


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    x: float
    y: float
    width: float
    height: float
    value: float
    value_label: str = ""
    highlight: bool = False
    minor: bool = False  # a call-control stage, not one of the latency budget's


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    y: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: float
    height: float
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    plot_left: float = 0.0
    plot_right: float = WIDTH
    plot_top: float = 0.0
    plot_bottom: float = 0.0


def nice_step(span: float, steps: int = 5) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about `steps` ticks."""
    if span <= 0:
        return 1.0
    raw = span / steps
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def waterfall(timeline: Sequence[TimelineStage]) -> Chart:
    """One row per stage in time order; each bar runs from the previous stage to this one
    (ms since the webhook), to scale, so the long gaps stand out."""
    stages = sorted(timeline, key=lambda stage: stage.ms)
    height = AXIS_HEIGHT + ROW_HEIGHT * max(len(stages), 1) + 4
    plot_left, plot_right = LABEL_WIDTH, WIDTH - 60
    if not stages:
        return Chart(WIDTH, height, (), (), plot_left, plot_right, AXIS_HEIGHT, height)
    start_ms = min(0.0, stages[0].ms)
    span_ms = max(stages[-1].ms - start_ms, 1.0)
    scale = (plot_right - plot_left) / span_ms
    bars = []
    previous = start_ms
    for row, stage in enumerate(stages):
        x = plot_left + (previous - start_ms) * scale
        width = max((stage.ms - previous) * scale, 1.5)  # a tick for an instant stage
        label = stage.stage + (f" ({stage.detail})" if stage.detail else "")
        bars.append(Bar(label=label, x=x, y=AXIS_HEIGHT + row * ROW_HEIGHT + 3, width=width,
                        height=ROW_HEIGHT - 6, value=stage.ms, value_label=f"{stage.ms:.0f}",
                        highlight=stage.stage == HIGHLIGHT_STAGE,
                        minor=stage.stage not in LATENCY_STAGES))
        previous = stage.ms
    step = nice_step(span_ms)
    ticks = tuple(Tick(plot_left + (n * step - start_ms) * scale, AXIS_HEIGHT - 8,
                       _ms_label(n * step))
                  for n in range(math.floor(start_ms / step), int(span_ms // step) + 1)
                  if n * step >= start_ms)
    return Chart(WIDTH, height, tuple(bars), ticks, plot_left, plot_right, AXIS_HEIGHT, height)


def columns(values: Sequence[tuple[str, float]], *, height: float = 180,
            counts: bool = True) -> Chart:
    """Vertical columns, one per (label, value), on a y axis from 0 with round ticks (whole
    ones for counts)."""
    plot_left, plot_right, plot_top, plot_bottom = 36.0, WIDTH - 8.0, 10.0, height - 24.0
    top = max((value for _, value in values), default=0.0)
    step = nice_step(max(top, 1.0), 4)
    if counts:
        step = max(step, 1.0)
    axis_max = step * max(1, math.ceil(top / step))
    slot = (plot_right - plot_left) / max(len(values), 1)
    scale = (plot_bottom - plot_top) / axis_max
    every = max(1, math.ceil(len(values) / 10))  # at most ~10 labels under the columns
    bars = tuple(
        Bar(label=label if index % every == 0 else "", x=plot_left + index * slot + slot * 0.15,
            y=plot_bottom - value * scale, width=slot * 0.7, height=value * scale, value=value,
            value_label=f"{value:g}")
        for index, (label, value) in enumerate(values))
    ticks = tuple(Tick(plot_left - 4, plot_bottom - n * step * scale, f"{n * step:g}")
                  for n in range(int(axis_max / step) + 1))
    return Chart(WIDTH, height, bars, ticks, plot_left, plot_right, plot_top, plot_bottom)


def hbars(values: Sequence[tuple[str, float, str]], *, label_width: float = 170) -> Chart:
    """Horizontal bars, one per (label, value, value label), scaled to the largest."""
    height = ROW_HEIGHT * max(len(values), 1) + 4
    plot_left, plot_right = label_width, WIDTH - 90
    top = max((value for _, value, _ in values), default=0.0) or 1.0
    scale = (plot_right - plot_left) / top
    bars = tuple(Bar(label=label, x=plot_left, y=row * ROW_HEIGHT + 3,
                     width=max(value * scale, 1.5 if value else 0.0), height=ROW_HEIGHT - 6,
                     value=value, value_label=shown)
                 for row, (label, value, shown) in enumerate(values))
    return Chart(WIDTH, height, bars, (), plot_left, plot_right, 0, height)


def _ms_label(ms: float) -> str:
    return f"{ms / 1000:g} s" if ms >= 1000 and ms % 1000 == 0 else f"{ms:g}"
