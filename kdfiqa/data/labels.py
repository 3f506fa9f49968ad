"""Reading quality labels from CSV files.

Two layouts are accepted:

* the VQualA 2025 challenge format: no header, two columns ``image_name,score``;
* a headed CSV (e.g. GFIQA-20K) whose image column is one of ``image``, ``img_name``,
  ``image_name``, ``name`` and whose score column is ``score`` or ``mos`` (names compared without
  regard to case: ``Image`` and ``MOS`` match). Other columns are ignored.

In both layouts a name without an extension refers to ``NAME.png`` (the challenge's names carry no
extension); the name is kept as written in the CSV and the ``.png`` is added to the file name only.
Every problem raises :class:`~kdfiqa.errors.DataError` with one line naming the file, the line and
the field at fault. The file is read by :func:`kdfiqa.data.csv_files.read_rows`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import DataError
from .csv_files import read_rows

__all__ = ["Label", "IMAGE_COLUMNS", "SCORE_COLUMNS", "DEFAULT_EXTENSION", "read_labels", "image_file_name"]

IMAGE_COLUMNS = ("image", "img_name", "image_name", "name")
"""Accepted names (compared case-insensitively) of a headed CSV's image column."""
SCORE_COLUMNS = ("score", "mos")
"""Accepted names (compared case-insensitively) of a headed CSV's score column."""
DEFAULT_EXTENSION = ".png"
"""Extension given to an image name that has none (challenge format)."""


@dataclass(frozen=True)
class Label:
    """One labelled image: its name as in the CSV, its score and the CSV line it came from."""

    name: str
    score: float
    line: int


def image_file_name(name: str) -> str:
    """The file name for a CSV image name: ``name`` itself, or ``name + ".png"`` when it has no suffix."""
    return name if PurePosixPath(name).suffix else name + DEFAULT_EXTENSION


def _find_column(header: list[str], accepted: tuple[str, ...]) -> list[int]:
    return [i for i, col in enumerate(header) if col.strip().lower() in accepted]


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_score(text: str, where: str, score_range: tuple[float, float] | None) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}, field 'score': {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}, field 'score': {text.strip()!r} is not a finite number")
    if score_range is not None and not score_range[0] <= value <= score_range[1]:
        lo, hi = score_range
        raise DataError(
            f"{where}, field 'score': {value:g} is outside [{lo:g}, {hi:g}], the model's output range; "
            "rescale the scores or allow the range explicitly (score_range=None)"
        )
    return value


def read_labels(
    path: str | os.PathLike[str], *, score_range: tuple[float, float] | None = (0.0, 1.0)
) -> list[Label]:
    """Read and check a CSV of image names and quality scores.

    Scores must be finite numbers inside ``score_range`` (the student's sigmoid output range [0, 1]
    by default; ``None`` accepts any finite score). The file must hold at least one row, no name may
    appear twice (nor two spellings of one file, ``a`` and ``a.png``), and in a header-less file every row has exactly two fields.
    """
    path = Path(path)
    rows = read_rows(path, what="label file")
    if not rows:
        raise DataError(f"{path}: no rows; expected 'image_name,score' lines (or a header with image and score columns)")
    first_line, first = rows[0]
    name_col, score_col, headed = 0, 1, False
    if len(first) >= 2 and not _looks_numeric(first[1]):
        headed = True
        name_cols, score_cols = _find_column(first, IMAGE_COLUMNS), _find_column(first, SCORE_COLUMNS)
        for cols, accepted, field in ((name_cols, IMAGE_COLUMNS, "image"), (score_cols, SCORE_COLUMNS, "score")):
            if len(cols) != 1:
                problem = "no" if not cols else "more than one"
                raise DataError(
                    f"{path} line {first_line}: header {','.join(first)!r} has {problem} {field} column; "
                    f"name exactly one of {', '.join(accepted)} (any case)"
                )
        name_col, score_col = name_cols[0], score_cols[0]
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path}: header only, no rows of labels")
    labels: list[Label] = []
    seen: dict[str, tuple[str, int]] = {}
    width = len(first) if headed else 2
    for line, row in rows:
        where = f"{path} line {line}"
        if len(row) != width:
            layout = f"{width} fields like the header" if headed else "2 fields: image_name,score"
            raise DataError(f"{where}: {len(row)} fields, expected {layout}")
        name = row[name_col]  # as written: " x" and "x" are different files
        if not name.strip() or "\x00" in name:
            raise DataError(f"{where}, field 'image': empty image name or a NUL character in it")
        score = _parse_score(row[score_col], where, score_range)
        key = image_file_name(name)  # "a" and "a.png" name the same file
        if key in seen:
            first_name, first_at = seen[key]
            what = f"duplicate name {name!r}" if first_name == name else f"{name!r} names the same file as {first_name!r}"
            raise DataError(f"{where}, field 'image': {what} (first on line {first_at}); keep one row per image")
        seen[key] = (name, line)
        labels.append(Label(name, score, line))
    return labels
