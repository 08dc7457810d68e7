"""The benchmark workload on Flower (see bench/bench_flower.py)."""
