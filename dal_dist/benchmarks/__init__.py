"""Benchmarks: programs that print one JSON line per result; compare ratios measured in the same run."""
