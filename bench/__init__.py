"""Benchmarks: tsyncd's accuracy in the deterministic simulator, beside chronyd's figures."""
