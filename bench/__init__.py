"""Benchmarks: figures measured against the real local cluster, as JSON in bench/results/."""
