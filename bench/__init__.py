"""Benchmarks (``make bench``): Shelf against the loopback limit and the usual servers."""
