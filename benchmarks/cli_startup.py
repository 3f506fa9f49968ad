"""How fast the command line starts: ``kdfiqa --help`` and ``kdfiqa budget --help`` beside ``import torch``.

Goal (issue: lazy imports): each help command takes at most 1.3x the time of ``python -c "import
torch"``, the cost every command that does real work pays anyway; printing help must not also pay for
timm, fvcore, scipy or the model zoo. Every run is a fresh ``python -m kdfiqa.cli.main ...`` process
started from the repository root; the three commands run in alternating rounds and the median of
each is reported as a ratio to the ``import torch`` median.

Beside the times, a separate untimed ``python -X importtime`` run of each command lists which of
:data:`HEAVY_MODULES` it imports.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Sequence

from .common import REPO, SHARED_MACHINE_NOTE, interleaved_medians

TITLE = "Command-line start-up time"
MAX_RATIO = 1.3
HEAVY_MODULES = ("torch", "timm", "fvcore", "scipy")
"""The packages that make start-up slow; ``--help`` should import none of them."""

REFERENCE = 'python -c "import torch"'
COMMANDS = {
    "kdfiqa --help": ("-m", "kdfiqa.cli.main", "--help"),
    "kdfiqa budget --help": ("-m", "kdfiqa.cli.main", "budget", "--help"),
    REFERENCE: ("-c", "import torch"),
}
"""Each timed command, as the arguments of a fresh ``python`` process."""


def _python(args: Sequence[str], *, options: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``python [options] args`` from the repository root; raise if it fails."""
    return subprocess.run([sys.executable, *options, *args], cwd=REPO, check=True, capture_output=True, text=True)


def heavy_imports(args: Sequence[str]) -> list[str]:
    """Which of :data:`HEAVY_MODULES` a fresh ``python ARGS`` imports (read from ``-X importtime``)."""
    log = _python(args, options=("-X", "importtime")).stderr
    names = {line.rpartition("|")[2].strip().split(".")[0] for line in log.splitlines()
             if line.startswith("import time:")}
    return sorted(names & set(HEAVY_MODULES))


def run(quick: bool) -> dict:
    repeats = 1 if quick else 9
    seconds = interleaved_medians({label: lambda args=args: _python(args) for label, args in COMMANDS.items()},
                                  repeats=repeats, warmup=0 if quick else 1)
    reference = seconds[REFERENCE]
    rows = [{"command": label, "seconds": seconds[label], "x import torch": seconds[label] / reference,
             "heavy modules": ", ".join(heavy_imports(args)) or "none"} for label, args in COMMANDS.items()]
    helps = [row for row in rows if row["command"] != REFERENCE]
    met = all(row["x import torch"] <= MAX_RATIO for row in helps)
    notes = [
        f"median of {repeats} alternating rounds of fresh processes ({sys.executable} from the repository root)",
        f"heavy modules: which of {', '.join(HEAVY_MODULES)} the command imports (python -X importtime, "
        "a separate untimed run)",
        SHARED_MACHINE_NOTE,
    ]
    for row in helps:
        if row["x import torch"] > MAX_RATIO:
            notes.insert(-1, f"gap: {row['command']} takes {row['x import torch']:.2f}x import torch and imports "
                             f"{row['heavy modules']}: the kdfiqa.cli modules that import them at module level "
                             "must import them inside run() instead")
    return {
        "title": TITLE,
        "goal": f"`kdfiqa --help` and `kdfiqa budget --help` each take at most {MAX_RATIO:g}x the time of "
                f"`{REFERENCE}`",
        "met": met,
        "columns": ["command", "seconds", "x import torch", "heavy modules"],
        "rows": rows,
        "notes": notes,
    }
