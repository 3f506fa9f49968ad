"""Shared helpers: machine facts, the machine's GEMM rate, robust timing, scratch data, result files and
markdown rendering."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
"""The repository root: the working folder of benchmarks that start ``python -m benchmarks.*`` workers."""


def machine() -> dict[str, Any]:
    """The facts needed to compare figures: CPU model, cores, threads, torch version, device."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    return info


SHARED_MACHINE_NOTE = (
    "absolute figures move with other jobs' load on the machine (load_average_1min in the JSON, "
    "taken when the result was written); the ratios compare runs interleaved in the same process"
)


def gemm_gmacs(*, n: int = 1024, repeats: int = 5) -> float:
    """The machine's fp32 matrix-multiply rate in giga multiply-adds per second (median of
    ``repeats`` n x n by n x n products at the current thread count); the roofline a network's
    fvcore count (which also counts multiply-adds) is compared with."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator)
    b = torch.randn(n, n, generator=generator)
    seconds = median_seconds(lambda: torch.mm(a, b), repeats=repeats, warmup=2)
    return n ** 3 / seconds / 1e9


def median_seconds(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], Any]], *, repeats: int = 5,
                        warmup: int = 1) -> dict[str, float]:
    """Median seconds of each named ``fn`` with the runs interleaved (a, b, a, b, ...), so that a
    change in the machine's load hits every contender alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """``count`` torch threads (None: unchanged) for the duration; the previous count restored after."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder for a benchmark's generated images and runs, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"kdfiqa-bench-{prefix}-") as path:
        yield Path(path)


def write_result(name: str, result: dict[str, Any], quick: bool, results: Path = RESULTS) -> Path:
    """Write ``result`` (with machine facts and mode) to ``results/NAME.json``."""
    results.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "quick": quick, "machine": machine(),
               "date": time.strftime("%Y-%m-%d"), **result}
    path = results / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render(result: dict[str, Any]) -> str:
    """One benchmark's result as a markdown section: title, goal, verdict, table, notes."""
    rows = result.get("rows", [])
    columns = result.get("columns") or (list(rows[0]) if rows else [])
    m = result.get("machine", {})
    verdict = {True: "met", False: "not met", None: "no goal"}[result.get("met")]
    lines = [f"### {result.get('title', result['benchmark'])}", ""]
    if result.get("goal"):
        lines.append(f"Goal: {result['goal']} — **{verdict}**.")
    lines.append(f"Measured {result.get('date', '?')} on {m.get('cpu', '?')} ({m.get('cores', '?')} "
                 f"cores, torch {m.get('torch', '?')}, {m.get('device', '?')})"
                 f"{' in quick mode' if result.get('quick') else ''}.")
    lines.append("")
    if rows:
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in rows:
            lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
        lines.append("")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    if result.get("notes"):
        lines.append("")
    return "\n".join(lines)
