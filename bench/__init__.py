"""Benchmarks (issue 8): ``python bench/run.py``; see bench/README.md. Never run by the tests."""
