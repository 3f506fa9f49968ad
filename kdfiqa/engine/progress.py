"""What a training run shows: a live progress bar over an epoch's steps and an end-of-epoch table.

These are the drawing parts; :class:`kdfiqa.engine.callbacks.ProgressDisplay` decides when they are
shown (rank 0, unless ``quiet``).
"""

from __future__ import annotations

import math
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

__all__ = ["TrainProgress", "epoch_table"]


class TrainProgress:
    """A rich progress bar (loss, lr, images/s, ETA) over one epoch's steps, drawn only when
    ``console`` is a terminal; every method is a no-op otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task: Any = None

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int = 0) -> None:
        """Show the bar of epoch ``epoch`` (0-based) of ``epochs``: ``done`` of ``total`` steps."""
        if not self.console.is_terminal:
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
        """Advance one step, showing its loss, the learning rate and the epoch's throughput."""
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=loss, lr=lr, ips=images_per_s)

    def end_epoch(self) -> None:
        """Remove the bar (it is transient); a no-op when none is shown."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


SHOWN_METRICS = ("srcc", "plcc", "score", "fitted_score")
"""Validation figures an epoch line and the end summary show, those a run measured
(``fitted_score`` only when it selects the best checkpoint)."""


def shown_figures(val: Mapping[str, Any], sep: str) -> str:
    """The :data:`SHOWN_METRICS` of a validation record, as ``name value`` joined by ``sep``."""
    return sep.join(f"{k} {val[k]:.4f}" for k in SHOWN_METRICS if val.get(k) is not None)


SHARE_PREFIX = "share/"
"""Training terms that are a loss term's share of the total (``share/task``, ``share/distill``, ...)."""


def loss_shares_text(train: Mapping[str, Any]) -> str:
    """The loss terms' shares of an epoch's training record as ``(task 62% distill 38%)``, or ``""``
    when it has none."""
    shares = [f"{k[len(SHARE_PREFIX):]} {100 * v:.0f}%" for k, v in train.items()
              if k.startswith(SHARE_PREFIX) and isinstance(v, (int, float))]
    return f" ({' '.join(shares)})" if shares else ""


def epoch_line(record: Mapping[str, Any], epochs: int) -> str:
    """One line for one epoch's record: loss (with its terms' shares), validation figures and spread,
    lr, speed, best mark."""
    val = record.get("val") or {}
    figures = shown_figures(val, "  ")
    spread = f"  spread {val['spread']:.3g}" if val.get("spread") is not None else ""
    train = record.get("train") or {}
    loss = train.get("loss")
    shares = loss_shares_text(train)
    return (f"epoch {record['epoch']}/{epochs}  loss {loss:.4g}{shares}  " if loss is not None else f"epoch {record['epoch']}/{epochs}  ") + (
        f"{figures}{spread}  lr {record['lr']:.3g}  {record['images_per_s']:.1f} img/s  {record['time']:.1f} s"
        + ("  * best" if record.get("best") else ""))


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
