"""Benchmarks: ``python -m kangnn.bench layer|conv|model``."""
