"""Benchmarks of the pure core (run with ``python -m bench.bench_planner``)."""
