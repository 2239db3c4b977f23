"""`hotline bench capacity --ab HOTLINE_X=V`: a setting's effect on the server's CPU per
call-second, measured so that this machine's drift does not pass for an effect.

On a shared VM the same configuration reads 20-30 % apart from one minute to the next, so
two runs an hour apart compare nothing. Here the server without the setting (A) and with
it (B) alternate, `repeats` times, each a fresh server and fresh generators at the same
steps; each pair is run back to back, A first in odd pairs and B first in even ones (ABBA:
a steady drift within a pair then favours neither), and the effect is read from the pairs:
the median of B ÷ A over them, with every pair shown.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from hotline.benchmarks.capacity import (
    CapacityBench,
    CapacityConfig,
    CapacityRun,
    StepResult,
)

AB_SECTION = "capacity-ab"


@dataclass(frozen=True, slots=True)
class AbPair:
    """One step of one repeat: A then B, back to back."""

    calls: int
    a: StepResult
    b: StepResult

    @property
    def ratio(self) -> float:
        """B's CPU per call-second over A's."""
        return self.b.cpu_ms_per_call_s / max(1e-9, self.a.cpu_ms_per_call_s)


@dataclass(frozen=True, slots=True)
class AbResult:
    config: CapacityConfig  # A's: B adds `setting`
    setting: tuple[str, str]
    pairs: list[AbPair]

    def steps(self) -> list[int]:
        return sorted({p.calls for p in self.pairs})

    def at(self, calls: int) -> list[AbPair]:
        return [p for p in self.pairs if p.calls == calls]

    def markdown(self, command: str) -> str:
        name, value = self.setting
        config = self.config
        lines = [
            f"## `hotline bench capacity --ab`: `{name}={value}` against the server without it",
            "",
            f"`{command}`: {len(self.pairs) // max(1, len(config.steps))} repeats of each step, "
            f"{config.delta_ms} ms engine deltas, windows of {config.window_s:g} s; A (without) "
            "and B (with) alternate, each a fresh `hotline serve` and fresh generators "
            "(otherwise as in the `capacity` section), so each pair ran in the same minutes; "
            "A first in odd pairs, B first in even ones, so that a drift within a pair "
            "favours neither.",
            "", "| calls | pair | A CPU ms / call-s | B CPU ms / call-s | B ÷ A | A msgs / call-s "
                "| B msgs / call-s | A relay p99 ms | B relay p99 ms | lost A / B |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for calls in self.steps():
            for number, pair in enumerate(self.at(calls), 1):
                a, b = pair.a, pair.b
                lines.append(
                    f"| {calls} | {number} | {a.cpu_ms_per_call_s:.2f} | "
                    f"{b.cpu_ms_per_call_s:.2f} | {pair.ratio:.2f} | "
                    f"{a.messages_per_call_s:.0f} | {b.messages_per_call_s:.0f} | "
                    f"{a.p99_ms:.1f} | {b.p99_ms:.1f} | {a.lost} / {b.lost} |")
        lines.append("")
        lines += [f"- {line}" for line in self.summary()]
        return "\n".join(lines) + "\n"

    def summary(self) -> list[str]:
        lines = []
        for calls in self.steps():
            pairs = self.at(calls)
            ratio = statistics.median(p.ratio for p in pairs)
            a = statistics.median(p.a.cpu_ms_per_call_s for p in pairs)
            b = statistics.median(p.b.cpu_ms_per_call_s for p in pairs)
            lines.append(
                f"{calls} calls: B ÷ A median **{ratio:.2f}** ({(ratio - 1):+.0%}) over "
                f"{len(pairs)} pairs (range {min(p.ratio for p in pairs):.2f}–"
                f"{max(p.ratio for p in pairs):.2f}); CPU per call-second median A "
                f"{a:.2f} ms (≈{1000 / a:.0f} calls per core), B {b:.2f} ms "
                f"(≈{1000 / b:.0f})")
        return lines


def bench_ab(config: CapacityConfig, setting: tuple[str, str], repeats: int,
             console: Console) -> AbResult:
    """A and B alternating `repeats` times at `config.steps` (every step run: a failed
    step still measures CPU)."""
    a_config = replace(config, stop_on_fail=False, profile_at=None)
    b_config = replace(a_config, server_env=(*config.server_env, setting))
    pairs: list[AbPair] = []
    quiet = Console(quiet=True)
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed:.0f}/{task.total:.0f} runs"),
                        TimeElapsedColumn(), console=console)
    with progress:
        task = progress.add_task("A/B", total=2 * repeats)
        for repeat in range(1, repeats + 1):
            runs: dict[str, CapacityRun] = {}
            sides = (("A", a_config, "without"), ("B", b_config, f"{setting[0]}={setting[1]}"))
            for side, side_config, what in sides if repeat % 2 else sides[::-1]:
                progress.update(task, description=f"pair {repeat}: {side} ({what})")
                runs[side] = CapacityBench(side_config, quiet).run()
                progress.advance(task)
            a_run, b_run = runs["A"], runs["B"]
            pairs += [AbPair(calls, a, b) for calls, a, b in zip(
                config.steps, a_run.steps, b_run.steps, strict=True)]
    return AbResult(config, setting, pairs)
