"""Benchmarks (speed, memory, sample efficiency); run as ``python -m bench.<name>``, not as tests."""
