"""The figures of ../shared/BENCHMARK.md, one module each."""
