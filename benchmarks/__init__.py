"""Benchmarks: ``python -m benchmarks`` prints tables; see docs/benchmarks.md."""
