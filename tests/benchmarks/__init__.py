"""Benchmarks, run by hand; pytest collects none of them."""
