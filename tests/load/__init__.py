"""Benchmarks and load runs (each a script: .venv/bin/python tests/load/<name>.py)."""
