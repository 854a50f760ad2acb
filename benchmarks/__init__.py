"""Benchmarks of dlfund against its peers; `python -m benchmarks.run --help`."""
