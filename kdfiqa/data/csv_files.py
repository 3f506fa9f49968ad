"""Every CSV file kdfiqa reads or writes, opened one way: text, ``newline=""``, UTF-8.

Reading skips a UTF-8 byte-order mark (spreadsheets write one) and reports every problem as a
:class:`~kdfiqa.errors.DataError` naming the file; :func:`read_rows` hands back the rows with their
line numbers, so that callers (:func:`kdfiqa.data.labels.read_labels`) can name ``FILE line N``.

Writing uses ``"\\n"`` line ends and is atomic (:mod:`kdfiqa.atomic_write`): the rows go to a
temporary file beside the target, which then replaces it, so a failed run never leaves a truncated
CSV behind; with ``overwrite=False`` an existing file is never replaced, even one written meanwhile
by another process. Three layouts:

* :func:`write_scores`: the VQualA 2025 challenge format, header-less ``image_name,score`` rows
  (labels, pseudo-labels);
* :func:`write_scores` with ``header=True``: the header line ``image,score`` first (predictions);
* :func:`write_table`: a header of any width and its rows (the details of synthetic data, the
  demo's predictions).

A float cell (a Python or numpy float) is written as its ``repr``, the shortest text that reads back
as the same float, unless a ``float_format`` such as ``".6f"`` is given; other cells as ``str``.
"""

from __future__ import annotations

import csv
import itertools
import numbers
import os
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

from ..atomic_write import atomic_open
from ..errors import DataError

__all__ = ["CsvRow", "SCORE_HEADER", "read_rows", "write_scores", "write_table"]

SCORE_HEADER = ("image", "score")
"""The header line :func:`write_scores` writes with ``header=True``."""


class CsvRow(NamedTuple):
    """One non-blank row of a CSV file and the 1-based line it ends on."""

    line: int
    fields: list[str]


def read_rows(path: str | os.PathLike[str], *, what: str = "CSV file") -> list[CsvRow]:
    """The rows of ``path`` that hold a non-blank field, with their line numbers.

    ``what`` names the file in messages (``"label file"``). A missing file, a folder, bytes that are
    not UTF-8, malformed CSV or a read failure raise :class:`~kdfiqa.errors.DataError`.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            return [CsvRow(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a {what}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _cell(value: object, float_format: str | None) -> object:
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return repr(float(value)) if float_format is None else format(float(value), float_format)
    return value


def _write(path: str | os.PathLike[str], header: Sequence[str] | None, rows: Iterable[Sequence[object]],
           float_format: str | None, overwrite: bool) -> Path:
    path = Path(path)
    with atomic_open(path, "w", overwrite=overwrite, newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        quoted = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_ALL)
        for row in itertools.chain([header] if header is not None else [], rows):
            cells = [_cell(value, float_format) for value in row]
            # the csv module quotes "\n" (the line end) but not a lone "\r", which readers take for one
            (quoted if any(isinstance(c, str) and "\r" in c for c in cells) else writer).writerow(cells)
    return path


def write_scores(
    path: str | os.PathLike[str],
    names: Sequence[str],
    scores: Sequence[float],
    *,
    header: bool = False,
    float_format: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write one ``name,score`` row per image to ``path``; returns ``path``.

    Without ``header`` the file is in the challenge format (no header line), which
    :func:`~kdfiqa.data.labels.read_labels` reads back; with it the line ``image,score`` comes first.
    Raises ``ValueError`` when ``names`` and ``scores`` differ in length; without ``overwrite``, an
    existing file (even one another process writes meanwhile) is refused with
    :class:`~kdfiqa.atomic_write.OutputExistsError`.
    """
    if len(names) != len(scores):
        raise ValueError(f"write_scores: {len(names)} names but {len(scores)} scores")
    return _write(path, SCORE_HEADER if header else None, zip(names, scores), float_format, overwrite)


def write_table(
    path: str | os.PathLike[str],
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    float_format: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write the ``header`` line and then ``rows`` (each as wide as ``header``) to ``path``; returns ``path``.

    Raises ``ValueError`` naming the first row whose width differs from the header's; ``overwrite``
    as for :func:`write_scores`.
    """
    def checked() -> Iterator[Sequence[object]]:
        for number, row in enumerate(rows, start=1):
            if len(row) != len(header):
                raise ValueError(f"write_table: row {number} has {len(row)} fields, the header {len(header)}")
            yield row

    return _write(path, header, checked(), float_format, overwrite)
