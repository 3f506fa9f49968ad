"""Where a command writes: one check, before any work, that the output path can be written and
holds nothing the user would lose.

Every command that writes calls :func:`check_output_dir` (a run folder, an export folder) or
:func:`check_output_file` (a CSV) first. Refused, each with one line naming the path and what to do:

* a file where a folder is expected, or a folder where a file is expected;
* a path whose nearest existing folder cannot be written;
* an output that is one of the command's own inputs (a checkpoint, a labels CSV, a teacher);
* a run folder that already holds any of a run's files (:data:`RUN_FILES`) without ``--resume`` or
  ``--overwrite`` (a new run then removes them first, so that no file of another run is taken for
  its own), and an existing output file without ``--overwrite``.

A full disk or a file-size limit met while writing is caught where the file is written (files are
written atomically, :mod:`kdfiqa.atomic_write`, so the previous file stays intact) and reported the
same way. These checks come first so that a refusal costs nothing. Another kdfiqa process writing
the same run folder or output file is kept out by its writer lock (:mod:`kdfiqa.writer_lock`), held
before these checks; a folder's lock file (``.kdfiqa.lock``) is never one of a run's files, so it is
no earlier run. Other programs ignore the lock, so a file written without ``--overwrite`` is also
moved into place no-clobber, which refuses one created meanwhile (the final guard).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Union

from .errors import ConfigError, spelled

__all__ = ["check_output_dir", "check_output_file", "RUN_FILES", "label_parts_folder", "label_part_file", "holds_label_parts"]

PathLike = Union[str, "os.PathLike[str]"]

RUN_FILES = ("best.pt", "last.pt", "log.jsonl")
"""What a training run writes into its folder."""


def label_parts_folder(out_csv: PathLike) -> Path:
    """Where a restartable labelling run writing ``out_csv`` keeps its part files
    (:mod:`kdfiqa.distill.label_parts`): ``<out_csv>.parts/``."""
    return Path(f"{os.fspath(out_csv)}.parts")


def label_part_file(folder: Path, shard: int) -> Path:
    """The part file of shard ``shard`` in ``folder``, a :func:`label_parts_folder`: ``part-000003.json``."""
    return folder / f"part-{shard:06d}.json"


def holds_label_parts(out_csv: PathLike) -> bool:
    """Whether a labelling run writing ``out_csv`` left part files there (an interrupted run's, or
    those a ``distill`` run keeps), the teacher passes a new run would lose."""
    return any(label_parts_folder(out_csv).glob("part-*.json"))  # the names label_part_file gives


def _writable(path: Path, flag: str) -> None:
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is a file where a folder is expected; "
                          "choose another path or move the file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {existing} is not writable; fix its permissions or choose another path")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _read_inside(out: Path, folder: Path) -> bool:
    """Whether ``out`` is an existing image file in the input ``folder`` (which the command reads)."""
    from .data.images import IMAGE_EXTENSIONS

    if not (folder.is_dir() and out.is_file() and out.suffix.lower() in IMAGE_EXTENSIONS):
        return False
    return folder.resolve() in out.resolve().parents


def _refuse_inputs(outputs: Iterable[Path], inputs: Iterable[Optional[PathLike]], flag: str) -> None:
    """An output that is an input, or an image inside an input folder, is refused (even with
    ``--overwrite``)."""
    given = [Path(p) for p in inputs if p]
    for out in outputs:
        for source in given:
            if _same(out, source) or out.resolve() == source.resolve() or _read_inside(out, source):
                raise ConfigError(f"{flag} {out}: would overwrite {'an image in ' if source.is_dir() else ''}"
                                  f"{source}, an input of this command; choose another output path")


def check_output_dir(path: PathLike, *, inputs: Iterable[Optional[PathLike]] = (), resume: bool = False,
                     overwrite: bool = False, files: Iterable[str] = RUN_FILES, flag: str | None = None) -> Path:
    """Check the run or export folder ``path`` (see the module docstring); ``files`` are the names
    the command writes into it; ``flag`` names it in messages (default: ``--out`` on the command
    line, ``path`` from Python). Returns it as a :class:`~pathlib.Path`."""
    flag = flag or spelled("--out", "path")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{flag} {folder}: is a file where a folder is expected; choose another path or move it")
    _writable(folder, flag)
    names = list(files)
    _refuse_inputs([folder / name for name in names], inputs, flag)
    for name in names:
        if (folder / name).exists() and not (folder / name).is_file():
            raise ConfigError(f"{flag} {folder}: {folder / name} is a folder where a file is expected; move it")
    held = [name for name in RUN_FILES if (folder / name).is_file()] if set(names) & set(RUN_FILES) else []
    if not resume and not overwrite and held:
        how = f"continue it with {spelled('--resume', 'resume=True')}, or pass" if "last.pt" in held else "pass"
        raise ConfigError(f"{flag} {folder}: already holds a run ({', '.join(held)}); {how} "
                          f"{spelled('--overwrite', 'overwrite=True')} to start "
                          "a new run there (its best.pt, last.pt and log.jsonl are removed first)")
    return folder


def check_output_file(path: PathLike, *, inputs: Iterable[Optional[PathLike]] = (), overwrite: bool = False,
                      flag: str | None = None, overwrite_flag: str | None = None) -> Path:
    """Check the output file ``path`` (see the module docstring); ``flag`` and ``overwrite_flag``
    name the option and its override in messages (default: ``--out`` and ``--overwrite`` on the
    command line, ``path`` and ``overwrite=True`` from Python). Returns it as a :class:`~pathlib.Path`."""
    flag = flag or spelled("--out", "path")
    overwrite_flag = overwrite_flag or spelled("--overwrite", "overwrite=True")
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"{flag} {out}: is a folder where a file is expected; give a file path")
    _writable(out.parent, flag)
    _refuse_inputs([out], inputs, flag)
    if out.exists() and not overwrite:
        raise ConfigError(f"{flag} {out}: already exists; pass {overwrite_flag} to replace it, or choose another path")
    return out
