"""Under torchrun a failure is one line in total and every rank exits with status 2, within the group's
timeout: the ranks are started as torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
environment, gloo on CPU), each as its own process so that each one's status and stderr are seen."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdfiqa.engine.rank_failure import is_peer_failure
from kdfiqa.errors import DataError

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SCRIPT = TESTS / "scripts" / "rank_failure_ddp.py"
TIMEOUT_S = 20
"""KDFIQA_DIST_TIMEOUT in these tests: the bound on any rank's wait for another."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ranks(argv: list[str], world: int = 2, timeout: float = 400) -> tuple[list[int], list[str], float]:
    """(each rank's exit status, each rank's stderr, seconds until the last exited) of ``python argv``
    started as ``torchrun --nproc_per_node world`` starts it."""
    port = _free_port()
    base = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                OMP_NUM_THREADS="1", KDFIQA_DIST_TIMEOUT=str(TIMEOUT_S),
                PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")]))
    start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, *argv], env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in range(world)]
    errs = [p.communicate(timeout=timeout)[1] for p in procs]
    return [p.returncode for p in procs], errs, time.monotonic() - start


def _lines(errs: list[str]) -> list[str]:
    return [line for err in errs for line in err.splitlines() if line.strip()]


def test_a_broken_collective_is_a_peer_failure_and_an_own_error_is_not():
    gloo = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
                        "[127.0.0.1]:58575. This is typically caused by a remote worker crashing.")
    assert is_peer_failure(gloo)
    assert not is_peer_failure(DataError("a.png: cannot decode"))
    assert not is_peer_failure(RuntimeError("shape mismatch"))


@pytest.mark.slow  # two fresh interpreters joining a process group
@pytest.mark.parametrize("kind, speaker, needle", [
    ("one", 1, "rank1.png: cannot decode"),            # only rank 1 saw it: rank 1 says it
    ("all", 0, "labels.csv line 3"),                   # every rank saw it: rank 0 alone says it
    ("last", 0, "scores.csv: No space left on device"),  # rank 0's last step: rank 1 does not exit 0
    ("killed", 0, "another rank stopped without reporting an error"),
])
def test_one_failure_is_one_line_from_one_rank_and_every_rank_exits_2(tmp_path, kind, speaker, needle):
    statuses, errs, seconds = ranks([str(SCRIPT), kind, "x.pt", "--root", str(tmp_path), "--csv", "x.csv"])
    lines = _lines(errs)
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("kdfiqa evaluate: error: "), errs
    assert needle in errs[speaker]
    if kind != "killed":
        assert statuses == [2, 2], (statuses, errs)
    else:
        assert statuses == [2, 9], (statuses, errs)
    assert seconds < 300


@pytest.mark.slow  # waits out the group's timeout twice
def test_a_rank_that_stops_answering_is_a_bounded_wait(tmp_path):
    statuses, errs, seconds = ranks([str(SCRIPT), "silent", "x.pt", "--root", str(tmp_path), "--csv", "x.csv"])
    lines = _lines(errs)
    assert statuses == [2, 2], (statuses, errs)
    assert len(lines) == 1 and "no answer within 20 s" in lines[0] and "KDFIQA_DIST_TIMEOUT" in lines[0], errs
    assert "Traceback" not in "".join(errs)


CLI = "import sys, tiny_fiqa; from kdfiqa.cli.main import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict:
    """Tiny labeled images, unlabeled images with one truncated file, and a teacher checkpoint."""
    import torch

    from kdfiqa.checkpoint import build_checkpoint, save_checkpoint
    from kdfiqa.models import create_model
    from tiny_fiqa import TINY, synthetic

    root = tmp_path_factory.mktemp("rankfail")
    images, labels = synthetic(root, 12, 0, "labeled")
    unlabeled = synthetic(root, 6, 1, "unlabeled")[0]
    damaged = root / "damaged"
    shutil.copytree(images, damaged)
    victims = {}
    for folder in (unlabeled, damaged):
        victim = victims[str(folder)] = sorted(folder.iterdir())[-1]
        victim.write_bytes(victim.read_bytes()[:60])
    torch.manual_seed(0)
    teacher = save_checkpoint(root / "teacher" / "best.pt", build_checkpoint(create_model(TINY)))
    base = ["--model", TINY, "--root", str(images), "--csv", str(labels), "--device", "cpu", "--quiet",
            "--epochs", "1", "--batch-size", "2", "--val-fraction", "0.3"]
    return {"base": base, "damaged": str(damaged), "unlabeled": str(unlabeled), "teacher": str(teacher),
            "victims": victims}


COMMANDS = {
    "train": lambda b, out: ["train", *b["base"][:2], "--root", b["damaged"], *b["base"][4:], "--out", str(out)],
    "distill": lambda b, out: ["distill", *b["base"], "--teacher", b["teacher"], "--unlabeled", b["unlabeled"],
                               "--out", str(out)],
    "pseudo-label": lambda b, out: ["pseudo-label", "--teacher", b["teacher"], "--images", b["unlabeled"],
                                    "--out", str(out / "pseudo.csv")],
    "predict": lambda b, out: ["predict", b["teacher"], b["unlabeled"], "--out", str(out / "scores.csv"),
                               "--device", "cpu"],
}


@pytest.mark.slow  # two fresh interpreters per command
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_bad_input_under_torchrun_is_one_line_and_status_2_on_every_rank(bad, tmp_path, command):
    """The truncated image (read by every rank, or by the one whose share holds it) is said once."""
    argv = COMMANDS[command](bad, tmp_path / "out")
    statuses, errs, seconds = ranks(["-c", CLI, *argv])
    lines = _lines(errs)
    text = "".join(errs)
    assert statuses == [2, 2], (statuses, errs)
    victim = bad["victims"][bad["damaged"] if command == "train" else bad["unlabeled"]]
    assert lines and lines[0].startswith(f"kdfiqa {command}: error: ") and victim.name in text, errs
    assert len([line for line in lines if not line.startswith("  ")]) == 1, errs  # one error (its list indented)
    assert "Traceback" not in text and "unexpected failure" not in text and "Connection closed" not in text
    assert seconds < 300


@pytest.mark.slow  # torchrun's agent and two ranks
def test_through_torchrun_itself_kdfiqa_says_one_line_and_torchrun_exits_1(bad, tmp_path):
    """torchrun adds its own report of the ranks' statuses (and exits 1); of kdfiqa there is one line."""
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", KDFIQA_DIST_TIMEOUT=str(TIMEOUT_S),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")]))
    argv = COMMANDS["train"](bad, tmp_path / "out")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "--no-python", sys.executable, "-c", CLI, *argv], env=env, capture_output=True, text=True,
                          timeout=400)
    ours = [line for line in done.stderr.splitlines() if line.startswith("kdfiqa ")]
    assert done.returncode == 1, done.stderr[-2000:]
    assert len(ours) == 1 and ours[0].startswith("kdfiqa train: error: "), done.stderr[-3000:]
    assert "exitcode  : 2" in done.stderr  # the rank torchrun names as the first failure exited with 2
    assert "Connection closed" not in done.stderr and "unexpected failure" not in done.stderr
