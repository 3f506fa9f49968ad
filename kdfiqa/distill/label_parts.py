"""Restartable bulk labelling: the part files a pseudo-labelling run keeps next to its CSV.

A run labelling ``out.csv`` cuts the images into shards of a fixed number of whole batches
(:func:`kdfiqa.engine.sharded.chunk_ranges`) and, as soon as a rank has scored one, writes it
atomically (:func:`kdfiqa.atomic_write.write_atomic`) to ``out.csv.parts/part-000003.json``:

==================  ===================================================================
``format``          :data:`FORMAT`
``fingerprint``     SHA-256 of the teacher's weights, the transform, the batch and shard
                    sizes and the image list: a part of another run never counts
``shard``           the shard's number
``rows``            ``[name, teacher score, label or null]`` per image, in data-set order
==================  ===================================================================

A rerun with ``resume`` keeps every part whose fingerprint and names match and scores only the
missing shards; once the CSV is written the folder is removed, unless the parts are the labelling
record of a ``distill`` run (``keep``): a resumed run then scores nothing again, and the CSV is
rewritten from the parts under the run's current calibration settings. JSON keeps each float64 score
exactly (Python writes the shortest repr that reads back to the same number), so a resumed run
writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

from ..atomic_write import write_atomic
from ..engine.distributed import DistContext, all_gather_objects
from ..outputs import label_part_file, label_parts_folder

__all__ = ["FORMAT", "LabelParts", "labelling_fingerprint"]

FORMAT = "kdfiqa.label_part.v1"

log = logging.getLogger(__name__)


def labelling_fingerprint(teacher: Any, transform: Any, names: Sequence[str], batch_size: int,
                          shard_size: int, amp: str = "none") -> str:
    """SHA-256 of what a part's scores depend on: the teacher's weights
    (:func:`~kdfiqa.distill.view_cache.teacher_fingerprint`), the transform spec, the batch and shard
    sizes, the autocast setting and the image names in order."""
    from .view_cache import teacher_fingerprint

    digest = hashlib.sha256(teacher_fingerprint(teacher).encode())
    digest.update(json.dumps([repr(transform), batch_size, shard_size, amp]).encode())
    for name in names:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


class LabelParts:
    """The part files of one labelling run (see the module docstring)."""

    def __init__(self, out_csv: str | Path, fingerprint: str, ctx: DistContext, keep: bool = False) -> None:
        self.folder = label_parts_folder(out_csv)
        self.fingerprint = fingerprint
        self.ctx = ctx
        self.keep = keep

    def path(self, shard: int) -> Path:
        return label_part_file(self.folder, shard)

    def write(self, shard: int, rows: list[tuple[str, float, float | None]]) -> None:
        """Keep shard ``shard``'s rows (called on the rank that scored it)."""
        write_atomic(self.path(shard), json.dumps({"format": FORMAT, "fingerprint": self.fingerprint, "shard": shard,
                                                   "rows": [list(row) for row in rows]}))

    def start(self, shards: Sequence[range], names: Sequence[str], resume: bool) -> dict[int, list[tuple]]:
        """The rows of the shards kept from an earlier run (``resume``: read on rank 0, handed to
        every rank); without ``resume`` an earlier run's parts are removed first. A part of another
        fingerprint, or whose names are not its shard's, is not kept (and later rewritten)."""
        kept: dict[int, list[tuple]] = {}
        if self.ctx.is_main:
            if not resume:
                shutil.rmtree(self.folder, ignore_errors=True)
            elif self.folder.is_dir():
                for number, items in enumerate(shards):
                    rows = self._read(number, [names[i] for i in items])
                    if rows is not None:
                        kept[number] = rows
                log.info("resume: %d of %d shards kept from %s", len(kept), len(shards), self.folder)
        return all_gather_objects(kept, self.ctx)[0]

    def _read(self, shard: int, names: list[str]) -> list[tuple] | None:
        path = self.path(shard)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = [(str(name), float(score), None if label is None else float(label))
                    for name, score, label in data["rows"]]
            fits = data["format"] == FORMAT and data["fingerprint"] == self.fingerprint and data["shard"] == shard
        except (OSError, ValueError, KeyError, TypeError):
            fits, rows = False, []
        if not fits or [row[0] for row in rows] != names:
            log.warning("%s: not a part of this run (another teacher, image list or damaged); it is scored again",
                        path)
            return None
        return rows

    def finish(self) -> None:
        """Remove the part files (on rank 0, once the CSV is written), unless ``keep``."""
        if self.ctx.is_main and not self.keep:
            shutil.rmtree(self.folder, ignore_errors=True)
