"""Benchmarks: speed is measured here, never in timed tests. Run modules with `python -m bench.NAME`."""
