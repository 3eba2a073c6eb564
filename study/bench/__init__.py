"""The benchmark, ``python -m study.bench``: throughput ratios measured side by side in one run."""
