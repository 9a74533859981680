"""Benchmarks of mdmbot against baselines measured in the same run (`python -m bench.run`)."""
