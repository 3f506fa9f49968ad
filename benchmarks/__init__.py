"""kdfiqa's benchmarks: run on demand with ``python -m benchmarks [NAME ...] [--quick]``.

Each benchmark is a module in this package with a ``run(quick: bool) -> dict`` function; the harness
records the machine, writes ``benchmarks/results/NAME.json`` and renders the tables into
``benchmarks/results/README.md`` and the Performance section of the project README.
"""
