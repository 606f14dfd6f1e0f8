"""Benchmarks: speed and memory against reference implementations, printed as ratios from one run."""
