"""Speed and memory benchmarks: `make bench` (= `python -m benchmarks`). See benchmarks/README.md."""
