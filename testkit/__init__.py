"""Helpers shared by the tests (tests/) and the benchmarks (bench/), which never import each other."""
