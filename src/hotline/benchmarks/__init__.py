"""Benchmarks against the simulators (`hotline bench …`; results in docs/benchmarks.md).

`greeting` runs the greeting benchmark and ties the rest together:

- `strategies`: the greeting strategies compared and the engine latency profiles;
- `tenants`: one business per lane, and the credentials server and simulators share;
- `server`: the server under test (its settings, readiness, GC pauses, logged errors);
- `calls`: placing the calls through the simulated phone, the engine simulator beside it;
- `simulator_process`: the same simulators in a child process;
- `engine_records`: what the engine simulator recorded, and the engine's time from it;
- `samples`: each call matched to its engine session, and what it measured;
- `stats`: percentiles, summaries, targets, the whole result;
- `report`: terminal tables, docs/benchmarks.md, raw samples.
"""
