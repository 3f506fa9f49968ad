"""kdfiqa.atomic_write: a file appears whole or not at all, and no-clobber writes never replace one."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kdfiqa.atomic_write import OutputExistsError, atomic_open, atomic_path, write_atomic
from kdfiqa.errors import ConfigError, KdfiqaError

ROOT = Path(__file__).resolve().parents[1]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("failure", [RuntimeError("writer failed"), KeyboardInterrupt()])
def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, failure):
    dest = write_atomic(tmp_path / "out.json", "old\n")
    with pytest.raises(type(failure)):
        with atomic_open(dest, "w", encoding="utf-8") as f:
            f.write("new, half written")
            f.flush()
            raise failure
    assert dest.read_text() == "old\n"
    assert _leftovers(tmp_path) == []
    with pytest.raises(type(failure)):
        with atomic_path(tmp_path / "never.bin"):
            raise failure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_no_partial_file_is_visible_while_writing(tmp_path):
    dest = tmp_path / "scores.csv"
    with atomic_open(dest, "w", encoding="utf-8") as f:
        f.write("a,0.5\n")
        f.flush()
        assert not dest.exists()  # only the temporary file, beside it, under a hidden name
        (tmp,) = _leftovers(tmp_path)
        assert tmp.startswith(".scores.csv.") and Path(f.name).parent == tmp_path
    assert dest.read_text() == "a,0.5\n" and _leftovers(tmp_path) == []


def test_no_clobber_refuses_an_existing_file_before_and_after_the_work(tmp_path):
    dest = write_atomic(tmp_path / "model.pt", b"kept")
    with pytest.raises(OutputExistsError) as early:
        with atomic_path(dest, overwrite=False):
            pytest.fail("the block runs although the file exists")
    message = str(early.value)
    assert "\n" not in message and str(dest) in message and "overwrite=True" in message
    assert isinstance(early.value, ConfigError) and isinstance(early.value, KdfiqaError)

    racing = tmp_path / "race.csv"
    with pytest.raises(OutputExistsError, match="race.csv"):
        with atomic_open(racing, "wb", overwrite=False) as f:
            f.write(b"mine")
            racing.write_bytes(b"another process finished first")
    assert racing.read_bytes() == b"another process finished first" and _leftovers(tmp_path) == []

    assert write_atomic(dest, b"replaced", overwrite=True).read_bytes() == b"replaced"
    assert write_atomic(tmp_path / "fresh.bin", b"new", overwrite=False).read_bytes() == b"new"


def test_no_clobber_without_hard_links(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    dest = write_atomic(tmp_path / "a.yaml", "name: x\n", overwrite=False)
    assert dest.read_text() == "name: x\n"
    with pytest.raises(OutputExistsError):
        with atomic_open(tmp_path / "b.yaml", "w", overwrite=False) as f:
            f.write("mine")
            (tmp_path / "b.yaml").write_text("theirs")
    assert (tmp_path / "b.yaml").read_text() == "theirs" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_a_written_file_gets_the_mode_a_new_file_gets(tmp_path, mask):
    old = os.umask(mask)
    try:
        plain = tmp_path / "plain"
        plain.write_bytes(b"")
        written = write_atomic(tmp_path / "written", b"x")
    finally:
        os.umask(old)
    assert (written.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777) == 0o666 & ~mask


def test_path_writers_and_parents(tmp_path):
    dest = tmp_path / "new" / "folder" / "model.onnx"
    with atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.is_file()
        tmp.unlink()
        tmp.write_text("written by path")  # a writer that creates the file anew
    assert dest.read_text() == "written by path" and _leftovers(dest.parent) == []
    assert write_atomic(tmp_path / "t.json", json.dumps({"é": 1})).read_bytes() == '{"\\u00e9": 1}'.encode()
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"):
        with atomic_open(tmp_path / "x", "a"):
            pass


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from kdfiqa.atomic_write import OutputExistsError, atomic_open
    dest, go, me = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    try:
        with atomic_open(dest, "w", overwrite=False) as f:
            f.write(me)
            print("ready", flush=True)
            while not go.exists():
                time.sleep(0.005)
    except OutputExistsError as exc:
        print(exc, file=sys.stderr)
        sys.exit(3)
""")


def test_two_processes_creating_the_same_file_exactly_one_wins(tmp_path):
    dest, go = tmp_path / "scores.csv", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(dest), str(go), name], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("first", "second")]
    try:
        for proc in procs:  # both passed the early check: neither file exists yet
            assert proc.stdout.readline().strip() == "ready"
        assert not dest.exists()
        go.touch()
        results = [proc.wait(timeout=30) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    errors = [proc.communicate()[1].strip() for proc in procs]
    assert sorted(results) == [0, 3], errors
    winner, loser = results.index(0), results.index(3)
    assert dest.read_text() == ("first", "second")[winner]
    assert errors[loser].startswith(f"{dest}: already exists") and "overwrite=True" in errors[loser]
    assert _leftovers(tmp_path) == []

