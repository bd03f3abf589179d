"""Benchmarks: run with `make bench`, never collected by pytest (see pyproject's norecursedirs)."""
