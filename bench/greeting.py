"""`python -m bench.greeting [options]`: the same as `hotline bench greeting [options]`.

The benchmark itself is the package `hotline.benchmarks` (strategies, tenants, calls,
statistics, report), tied together by `hotline.benchmarks.greeting`; see its docstring and
docs/benchmarks.md for what is measured and how.
"""

from __future__ import annotations

import typer

from hotline.benchmarks.greeting import bench_greeting, run_benchmark, run_strategy
from hotline.benchmarks.stats import BenchResult
from hotline.benchmarks.strategies import STRATEGIES, Strategy
from hotline.benchmarks.tenants import bench_business

__all__ = ["STRATEGIES", "BenchResult", "Strategy", "bench_business", "bench_greeting",
           "main", "run_benchmark", "run_strategy"]


def main() -> None:
    from hotline.cli.bench import greeting

    typer.run(greeting)


if __name__ == "__main__":
    main()
