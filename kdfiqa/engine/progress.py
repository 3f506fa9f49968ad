"""What a training run shows and records: a live progress bar, an epoch table, a JSON-lines log.

The bar (loss, lr, images/s, ETA) is drawn only on rank 0, on a terminal, and when not ``quiet``;
the end-of-epoch table is printed on rank 0 unless ``quiet``. ``log.jsonl`` next to the checkpoints
gets one JSON object per epoch: epoch, step, lr, the training loss terms, the validation metrics,
the epoch's wall time and images per second.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

__all__ = ["TrainProgress", "epoch_table", "EpochLog"]


class TrainProgress:
    """A rich progress bar over one epoch's steps; every method is a no-op when disabled."""

    def __init__(self, enabled: bool, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal
        self._progress: Progress | None = None
        self._task: Any = None

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int = 0) -> None:
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  "
                       "{task.fields[ips]:.1f} img/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=total, completed=done, loss=math.nan,
                                             lr=0.0, ips=0.0)

    def update(self, *, loss: float, lr: float, images_per_s: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=loss, lr=lr, ips=images_per_s)

    def end_epoch(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def epoch_table(record: Mapping[str, Any]) -> Table:
    """A two-column table of one epoch's record (as written to ``log.jsonl``)."""
    table = Table(title=f"epoch {record['epoch']}", show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("value", justify="right")
    for key, value in _flat(record):
        if key == "epoch":
            continue
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        table.add_row(key, text)
    return table


def _flat(record: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in record.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


class EpochLog:
    """``log.jsonl``: one JSON object per finished epoch, each line flushed to disk when written."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def rewrite(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Replace the log with ``records`` (a resumed run restarts from its checkpoint's history)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")

    def append(self, record: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
