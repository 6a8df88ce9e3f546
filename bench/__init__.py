"""Benchmarks that print comparable numbers (ratios measured in one run, medians).

``python bench/run_all.py`` runs every benchmark and writes ``bench/RESULTS.md``;
each ``bench/bench_*.py`` also runs alone (``python -m bench.bench_codec``).
Nothing here is a timed test: ``tests/system/test_bench_smoke.py`` only checks that
the quick modes run.
"""
