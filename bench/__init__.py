"""TokenDock's benchmarks: `python -m bench.<name>` (the Makefile's `bench-*` targets).

Every bench starts its servers, drives load and writes its dated section of docs/ through
`bench.harness`; `--smoke` runs one short repetition, judges nothing and writes nothing.
"""
