"""How fast the command line starts and refuses: ``kdfiqa --help``, ``kdfiqa budget --help`` and three
typical refusals beside ``import torch``.

Goals: each help command takes at most 1.3x the time of ``python -c "import torch"`` (issue: lazy
imports), the cost every command that does real work pays anyway; printing help must not also pay for
timm, fvcore, scipy or the model zoo. Each refusal (``kdfiqa distill`` into a folder that holds a run,
a flag value argparse refuses, a ``--csv`` that does not exist) answers in at most 0.3x that time
(issue: the first hour of a new user): a mistake is reported before torch is imported. Every run is
a fresh ``python -m kdfiqa.cli.main ...`` process started from the repository root; the commands run
in alternating rounds and the median of each is reported as a ratio to the ``import torch`` median.

Beside the times, a separate untimed ``python -X importtime`` run of each command lists which of
:data:`HEAVY_MODULES` it imports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Sequence

from .common import REPO, SHARED_MACHINE_NOTE, interleaved_medians, scratch_dir

TITLE = "Command-line start-up and refusal time"
MAX_RATIO = 1.3
MAX_REFUSAL_RATIO = 0.3
HEAVY_MODULES = ("torch", "timm", "fvcore", "scipy")
"""The packages that make start-up slow; ``--help`` should import none of them."""

REFERENCE = 'python -c "import torch"'
COMMANDS = {
    "kdfiqa --help": ("-m", "kdfiqa.cli.main", "--help"),
    "kdfiqa budget --help": ("-m", "kdfiqa.cli.main", "budget", "--help"),
    REFERENCE: ("-c", "import torch"),
}
"""Each timed command, as the arguments of a fresh ``python`` process."""


def refusals(scratch: Path) -> dict[str, tuple[str, ...]]:
    """Three typical refusals (each exits with status 2), set up in ``scratch``: an existing run
    folder without ``--overwrite``, a flag value argparse refuses, a ``--csv`` file that is missing."""
    run = scratch / "run"
    run.mkdir()
    for name in ("last.pt", "log.jsonl"):
        (run / name).write_bytes(b"")
    labels = scratch / "labels.csv"
    labels.write_text("a.png,0.5\n")
    data = ("--root", str(scratch), "--csv", str(labels), "--model", "emo2_1m")
    main = ("-m", "kdfiqa.cli.main")
    return {
        "kdfiqa distill into a folder holding a run": (*main, "distill", *data, "--teacher", "t.pt", "--out", str(run)),
        "kdfiqa train --lr abc": (*main, "train", *data, "--lr", "abc"),
        "kdfiqa train --csv missing.csv": (*main, "train", *data[:2], "--csv", str(scratch / "missing.csv"),
                                           *data[4:], "--out", str(scratch / "new")),
    }


def _python(args: Sequence[str], *, options: Sequence[str] = (), status: int = 0) -> subprocess.CompletedProcess[str]:
    """Run ``python [options] args`` from the repository root; raise unless it exits with ``status``."""
    done = subprocess.run([sys.executable, *options, *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode != status:
        raise RuntimeError(f"python {' '.join(args)} exited with {done.returncode}, not {status}: {done.stderr[-500:]}")
    return done


def heavy_imports(args: Sequence[str], status: int = 0) -> list[str]:
    """Which of :data:`HEAVY_MODULES` a fresh ``python ARGS`` imports (read from ``-X importtime``)."""
    log = _python(args, options=("-X", "importtime"), status=status).stderr
    names = {line.rpartition("|")[2].strip().split(".")[0] for line in log.splitlines()
             if line.startswith("import time:")}
    return sorted(names & set(HEAVY_MODULES))


def run(quick: bool) -> dict:
    repeats = 1 if quick else 9
    with scratch_dir("cli-startup") as scratch:
        refused = refusals(scratch)
        commands = {**COMMANDS, **refused}
        status = {label: 2 if label in refused else 0 for label in commands}
        seconds = interleaved_medians({label: lambda args=args, code=status[label]: _python(args, status=code)
                                       for label, args in commands.items()},
                                      repeats=repeats, warmup=0 if quick else 1)
        heavy = {label: ", ".join(heavy_imports(args, status[label])) or "none" for label, args in commands.items()}
    reference = seconds[REFERENCE]
    rows = [{"command": label, "seconds": seconds[label], "x import torch": seconds[label] / reference,
             "heavy modules": heavy[label]} for label in commands]
    limits = {label: MAX_REFUSAL_RATIO if label in refused else MAX_RATIO for label in commands if label != REFERENCE}
    met = all(row["x import torch"] <= limits[row["command"]] for row in rows if row["command"] in limits)
    notes = [
        f"median of {repeats} alternating rounds of fresh processes ({sys.executable} from the repository root)",
        f"heavy modules: which of {', '.join(HEAVY_MODULES)} the command imports (python -X importtime, "
        "a separate untimed run)",
        "refusals: each exits with status 2 and one line on stderr; the run folder holds last.pt and log.jsonl, "
        "the labels file one row",
        SHARED_MACHINE_NOTE,
    ]
    for row in rows:
        limit = limits.get(row["command"])
        if limit is not None and row["x import torch"] > limit:
            notes.insert(-1, f"gap: {row['command']} takes {row['x import torch']:.2f}x import torch (goal "
                             f"{limit:g}x) and imports {row['heavy modules']}: the modules it runs before "
                             "answering must import them inside the functions that need them")
    return {
        "title": TITLE,
        "goal": f"`kdfiqa --help` and `kdfiqa budget --help` each take at most {MAX_RATIO:g}x, and each typical "
                f"refusal at most {MAX_REFUSAL_RATIO:g}x, the time of `{REFERENCE}`",
        "met": met,
        "columns": ["command", "seconds", "x import torch", "heavy modules"],
        "rows": rows,
        "notes": notes,
    }
