"""Benchmarks. Results are written to docs/benchmarks.md.

The code of each benchmark lives in the `hotline` package (so that the installed `hotline`
command can run it: `hotline bench greeting`); the modules here run it from a checkout,
e.g. `python -m bench.greeting --calls 20`.
"""
