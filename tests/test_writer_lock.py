"""kdfiqa.writer_lock: one writer per run folder or output file, refused at once, never stale."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kdfiqa import writer_lock as module
from kdfiqa.errors import ConfigError
from kdfiqa.writer_lock import LOCK_NAME, WriterLockedError, lock_file_of, writer_lock

ROOT = Path(__file__).resolve().parents[1]
needs_flock = pytest.mark.skipif(module.fcntl is None, reason="no fcntl on this platform")

HOLDER = textwrap.dedent("""
    import sys, time
    from kdfiqa.writer_lock import writer_lock
    with writer_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
""")


def test_the_lock_file_of_a_folder_and_of_a_file(tmp_path):
    assert lock_file_of(tmp_path) == tmp_path / LOCK_NAME
    assert lock_file_of(f"{tmp_path / 'run'}{os.sep}") == tmp_path / "run" / LOCK_NAME
    assert lock_file_of(tmp_path / "scores.csv") == tmp_path / "scores.csv.lock"


@needs_flock
def test_held_for_the_block_with_the_pid_inside_and_released_on_any_exit(tmp_path):
    run = tmp_path / "run"
    with writer_lock(f"{run}{os.sep}") as lock:
        assert lock == run / LOCK_NAME and lock.read_text().strip() == str(os.getpid())
        with pytest.raises(WriterLockedError) as refused:  # another open file: refused, even here
            with writer_lock(run):
                pytest.fail("a second writer got the lock")
        text = str(refused.value)
        assert "\n" not in text and f"pid {os.getpid()}" in text and str(run) in text
        assert isinstance(refused.value, ConfigError)
    assert not lock.exists()  # removed on release
    with pytest.raises(KeyboardInterrupt):
        with writer_lock(tmp_path / "out.csv"):
            raise KeyboardInterrupt
    with writer_lock(tmp_path / "out.csv") as again:
        assert again == tmp_path / "out.csv.lock"


@needs_flock
def test_a_second_process_is_refused_until_the_holder_dies(tmp_path):
    target = tmp_path / "scores.csv"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], env=env, text=True,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WriterLockedError, match=rf"pid {holder.pid}\b.*{target.name}\.lock"):
            with writer_lock(target):
                pytest.fail("the lock was taken while another process holds it")
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
        holder.communicate()
    lock = lock_file_of(target)
    assert lock.read_text().strip() == str(holder.pid)  # a stale lock file: the dead holder's
    with writer_lock(target):
        assert lock.read_text().strip() == str(os.getpid())


@needs_flock
def test_a_lock_file_replaced_while_locking_is_locked_anew(tmp_path, monkeypatch):
    target = tmp_path / "out.csv"
    lock = lock_file_of(target)
    real_flock = module.fcntl.flock
    calls = []

    def flock_after_a_release(fd, operation):
        if not calls:  # the earlier holder removes its file, a third writer creates a new one
            lock.unlink()
            lock.write_text("")
        calls.append(fd)
        return real_flock(fd, operation)

    monkeypatch.setattr(module.fcntl, "flock", flock_after_a_release)
    with writer_lock(target):
        assert len(calls) == 2 and lock.read_text().strip() == str(os.getpid())


def test_a_no_op_without_fcntl(tmp_path, monkeypatch):
    monkeypatch.setattr(module, "fcntl", None)
    with writer_lock(tmp_path / "run" / "x.csv") as lock:
        with writer_lock(tmp_path / "run" / "x.csv"):
            assert lock == tmp_path / "run" / "x.csv.lock" and not lock.exists()
    assert list(tmp_path.iterdir()) == []
