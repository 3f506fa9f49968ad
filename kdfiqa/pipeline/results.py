"""What the pipeline's stages pass on (:class:`Labels`, :class:`RunResult`) and the files a run leaves
beside its checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..config import RunConfig

__all__ = ["Labels", "RunResult", "label_sets", "PSEUDO_LABELS", "VIEW_CACHE"]

PSEUDO_LABELS = "pseudo_labels.csv"
"""The teacher's labels of ``data.unlabeled``, in the run folder."""
VIEW_CACHE = "teacher_views.pt"
"""The crop-level view cache (``distill.view_cache``), in the run folder."""


@dataclass(frozen=True)
class Labels:
    """A labels source: a CSV (formats in :mod:`kdfiqa.data.labels`) and the folder its names are
    relative to. :func:`pseudo_label` returns one; :func:`distill` and :func:`train` take one as
    ``pseudo`` and add it to the training share as given."""

    csv: Path
    root: Path
    score_range: tuple[float, float] | None = (0.0, 1.0)
    """Range every score must lie in (``None``: any finite score, as unclipped calibrated or raw
    linear-output pseudo-labels may fall outside [0, 1])."""

    def dataset(self, transform: Any = None, *, allow_outside_root: bool = False) -> Any:
        from ..data import FIQADataset

        return FIQADataset(self.root, self.csv, transform=transform, allow_outside_root=allow_outside_root,
                           score_range=self.score_range)


@dataclass
class RunResult:
    """Where a training stage left its files and what it saw."""

    output_dir: Path
    checkpoint: Path
    """``best.pt`` (``last.pt`` when the run had no validation set)."""
    history: list[dict[str, Any]]
    config: RunConfig
    """The resolved configuration stored in the checkpoints."""

    @property
    def collapsed(self) -> bool:
        """Whether every validated epoch's predictions collapsed to a near-constant output (spread
        below :data:`~kdfiqa.metrics.COLLAPSE_SPREAD`), so no epoch could be kept as
        ``best.pt`` and :attr:`checkpoint` is a ``last.pt`` not worth deploying."""
        validated = [r for r in self.history if "spread" in r.get("val", {})]
        return bool(validated) and all(r.get("collapsed") for r in validated)


def label_sets(pseudo: Labels | Sequence[Labels] | None) -> list[Labels]:
    """``pseudo`` as a list of label sets (none, one or several)."""
    return [] if pseudo is None else [pseudo] if isinstance(pseudo, Labels) else list(pseudo)
