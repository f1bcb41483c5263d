"""The benchmark is run by ``python3 tests/bench/run_bench.py``, never collected by pytest."""

collect_ignore_glob = ["*.py"]
