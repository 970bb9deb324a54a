"""Helpers for the tests, benchmarks and load-test scripts (not part of the installed packages).

Run the scripts as modules from the repository root (``python -m benchmarks.service_bench``,
``python -m loadtest.soak``) so this package imports without path tricks.
"""
