"""Benchmarks: step time of the SAM family, input-pipeline throughput."""
