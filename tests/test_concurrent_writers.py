"""One writer per run folder and output file: train, distill, --resume, predict and pseudo-label are
refused, with one line naming the holder's pid, while another process holds the writer lock of what
they write, and leave it untouched; once the holder dies the same command runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kdfiqa import writer_lock as module
from kdfiqa.cli.main import main
from kdfiqa.writer_lock import LOCK_NAME, lock_file_of
from tiny_fiqa import TINY, synthetic

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.skipif(module.fcntl is None, reason="no fcntl on this platform")

HOLDER = textwrap.dedent("""
    import sys, time
    from kdfiqa.writer_lock import writer_lock
    with writer_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")

CLI = "import sys, tiny_fiqa; from kdfiqa.cli.main import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A finished one-epoch run of the tiny model (its folder's files and their bytes)."""
    root = tmp_path_factory.mktemp("writers")
    images, labels = synthetic(root, 12, 0, "labeled")
    base = ["--model", TINY, "--root", images, "--csv", labels, "--device", "cpu", "--quiet", "--epochs", "1",
            "--batch-size", "4", "--val-fraction", "0.3"]
    out = root / "run"
    assert main([str(a) for a in ["train", *base, "--out", out]]) == 0
    return {"root": root, "images": images, "base": [str(a) for a in base], "out": out,
            "ckpt": out / "best.pt", "unlabeled": synthetic(root, 6, 1, "unlabeled")[0]}


class Holder:
    """Another process holding ``writer_lock(target)`` until it is killed."""

    def __init__(self, target: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, target], env=ENV, text=True,
                                        stdout=subprocess.PIPE)
        assert self.process.stdout.readline().strip() == "held"
        self.pid = self.process.pid

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.process.communicate(timeout=30)


@pytest.fixture
def holders():
    started: list[Holder] = []
    yield lambda target: started.append(Holder(target)) or started[-1]
    for holder in started:
        holder.process.kill()
        holder.process.communicate()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, argv: list[str], pid: int) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"pid {pid}" in err and "in use by another kdfiqa process" in err, err


def test_a_second_train_a_resume_and_a_distill_are_refused_while_the_run_folder_is_held(capsys, run, holders):
    out = run["out"]
    before = _files(out)
    holder = holders(f"{out}{os.sep}")
    for argv in (["train", *run["base"], "--out", str(out), "--overwrite"],
                 ["train", *run["base"], "--out", str(out), "--resume"],
                 ["distill", *run["base"], "--teacher", str(run["ckpt"]), "--out", str(out), "--overwrite"]):
        _refused(capsys, argv, holder.pid)
    assert _files(out) == {**before, LOCK_NAME: f"{holder.pid}\n".encode()}  # untouched
    holder.kill()
    assert main(["train", *run["base"], "--out", str(out), "--resume", "--allow-changes",
                 "--epochs", "2"]) == 0
    assert not (out / LOCK_NAME).exists()  # removed on release, never taken for a run file
    assert main(["train", *run["base"], "--out", str(out), "--resume", "--allow-changes", "--epochs", "2"]) == 0


@pytest.mark.slow  # a fresh interpreter imports torch
def test_the_command_line_exits_2_with_one_line_and_a_new_folder_is_left_as_it_was(run, holders, tmp_path):
    new = tmp_path / "new"
    holder = holders(f"{new}{os.sep}")
    done = subprocess.run([sys.executable, "-c", CLI, "train", *run["base"], "--out", str(new)], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and f"pid {holder.pid}" in line and "Traceback" not in line
    assert sorted(p.name for p in new.iterdir()) == [LOCK_NAME]
    holder.kill()
    assert main(["train", *run["base"], "--out", str(new)]) == 0 and (new / "best.pt").is_file()


@pytest.mark.parametrize("command", ["predict", "pseudo-label"])
def test_an_output_file_held_by_another_process_is_refused(capsys, run, holders, tmp_path, command):
    out = tmp_path / "scores.csv"
    out.write_text("another writer's\n")
    argv = (["predict", str(run["ckpt"]), str(run["images"]), "--device", "cpu"] if command == "predict" else
            ["pseudo-label", "--teacher", str(run["ckpt"]), "--images", str(run["images"])])
    argv += ["--out", str(out), "--overwrite"]
    holder = holders(str(out))
    _refused(capsys, argv, holder.pid)
    assert out.read_text() == "another writer's\n" and lock_file_of(out).read_text() == f"{holder.pid}\n"
    holder.kill()
    assert main(argv) == 0
    assert out.read_text() != "another writer's\n" and not lock_file_of(out).exists()


def test_nested_stages_write_their_own_folders_under_the_held_run_folder(run, tmp_path):
    """Self-training retrains the teacher in OUT/self_train_1/teacher and labels into OUT (its own
    lock files, other than OUT's): the run holding OUT refuses none of its stages."""
    out = tmp_path / "selftrained"
    argv = ["distill", *run["base"], "--teacher", str(run["ckpt"]), "--unlabeled", str(run["unlabeled"]),
            "--self-train", "1", "--out", str(out)]
    assert main(argv) == 0
    assert (out / "self_train_1" / "teacher" / "best.pt").is_file() and (out / "best.pt").is_file()
    assert not list(out.rglob("*.lock")) and not list(out.rglob(LOCK_NAME))


@pytest.mark.slow  # torchrun starts two fresh interpreters
def test_under_torchrun_rank_zero_holds_the_lock_and_every_rank_is_refused_alike(tmp_path):
    from kdfiqa.writer_lock import writer_lock

    env = {key: value for key, value in ENV.items() if key not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    held, free, report = tmp_path / "held", tmp_path / "free", tmp_path / "report"
    report.mkdir()
    with writer_lock(f"{held}{os.sep}"):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                               "2", str(TESTS / "scripts" / "writer_lock_ddp.py"), str(held), str(free), str(report)],
                              env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [(report / f"rank{r}.txt").read_text().splitlines() for r in (0, 1)]
    assert [lines[0] for lines in ranks] == [f"held: refused by {os.getpid()}"] * 2
    rank0_pid = ranks[0][-1].split()[1]
    assert [lines[1] for lines in ranks] == [f"free: taken, lock file by {rank0_pid}"] * 2  # rank 0's lock
    assert not free.exists() and not held.exists()  # nothing written: the folders the locks made are gone
