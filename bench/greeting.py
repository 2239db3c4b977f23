"""`python -m bench.greeting [options]`: the same as `hotline bench greeting [options]`.

The benchmark itself is `hotline.bench_greeting` (strategies, businesses, measurement,
report); see its docstring and docs/benchmarks.md for what is measured and how.
"""

from __future__ import annotations

import typer

from hotline.bench_greeting import (
    STRATEGIES,
    BenchResult,
    Strategy,
    bench_business,
    bench_greeting,
    run_benchmark,
    run_strategy,
)

__all__ = ["STRATEGIES", "BenchResult", "Strategy", "bench_business", "bench_greeting",
           "main", "run_benchmark", "run_strategy"]


def main() -> None:
    from hotline.cli.bench import greeting

    typer.run(greeting)


if __name__ == "__main__":
    main()
