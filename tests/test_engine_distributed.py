"""torchrun with two CPU processes (gloo): DDP training runs, only rank 0 writes, the gathered
validation metrics equal one process's metrics on the same checkpoint, mid-epoch resume restores
every rank's streams, distillation wraps only the trainable part (never the teacher) in DDP, and a
two-stream sampler's batches reach every rank whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

from engine_toys import ToyFaces, ToyNet  # noqa: E402

from kdfiqa.checkpoint import load_checkpoint, load_weights  # noqa: E402
from kdfiqa.engine import evaluate_model, init_distributed  # noqa: E402


def _torchrun(script: str, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None), env.pop("RANK", None), env.pop("LOCAL_RANK", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(SCRIPTS / script), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path):
    _torchrun("engine_ddp.py", str(tmp_path))
    report = json.loads((tmp_path / "ddp_metrics.json").read_text())
    assert report["world_size"] == 2
    assert report["index"] == list(range(9))  # 9 samples on 2 ranks: the padding counted once
    log = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(log) == 1  # one writer
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == 2  # 16 samples / 2 ranks / batch 4
    model = ToyNet()
    load_weights(model, tmp_path / "last.pt")
    single, _ = evaluate_model(model, ToyFaces(9, seed=1, noise=0.0), init_distributed("cpu"),
                               batch_size=2)
    assert single["n"] == report["metrics"]["n"] == 9
    for key in ("srcc", "plcc", "krcc", "rmse", "score"):
        assert report["metrics"][key] == pytest.approx(single[key], rel=1e-6), key
    assert json.loads(log[0])["val"]["score"] == pytest.approx(single["score"], rel=1e-6)


@pytest.mark.slow
def test_torchrun_mid_epoch_resume_restores_every_ranks_rng(tmp_path):
    full, broken = tmp_path / "full", tmp_path / "broken"
    _torchrun("engine_ddp_resume.py", str(full), "full")
    _torchrun("engine_ddp_resume.py", str(broken), "crash")
    interrupted = load_checkpoint(broken / "last.pt")
    assert interrupted["step"] == 6 and interrupted["epoch"] == 1  # mid-epoch 2 (4 steps an epoch)
    ranks = interrupted["trainer"]["rank_rng"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["now"]["torch"], ranks[1]["now"]["torch"])
    _torchrun("engine_ddp_resume.py", str(broken), "resume")
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(broken / "last.pt")
    assert a["step"] == b["step"] == 8
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    # the interrupted epoch's loss sums of both ranks were saved and counted once on resume
    for full_epoch, resumed_epoch in zip(a["trainer"]["history"], b["trainer"]["history"]):
        assert resumed_epoch["train"] == pytest.approx(full_epoch["train"], rel=1e-9)


@pytest.mark.slow
def test_torchrun_distillation_wraps_only_the_trainable_part_and_keeps_ranks_in_step(tmp_path):
    _torchrun("engine_ddp_distill.py", str(tmp_path))
    report = json.loads((tmp_path / "ddp_distill.json").read_text())
    assert report["world_size"] == 2 and report["ddp"]
    assert report["teacher_tensors_in_ddp"] == 0  # no teacher parameter or buffer under DDP
    assert report["ddp_params_are_student_and_projector"]
    assert report["trainable_same_on_ranks"] and report["projector_changed"]
    assert report["teacher_same_on_ranks"] and report["teacher_unchanged"]
    assert {"loss", "task", "distill", "feature/bn"} <= set(report["train_terms"])
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 4  # 16 samples / 2 ranks / batch 4, 2 epochs
    trained = torch.load(tmp_path / "trained.pt", weights_only=True)
    for key, value in last["state_dict"].items():
        assert torch.equal(value, trained[f"model.{key}"]), key
    for key, value in last["trainer"]["objective"].items():
        assert torch.equal(value, trained[key]), key


@pytest.mark.slow
def test_torchrun_two_stream_batches_stay_whole_on_every_rank(tmp_path):
    _torchrun("engine_ddp_two_stream.py", str(tmp_path))
    report = json.loads((tmp_path / "two_stream.json").read_text())
    ranks, whole = report["ranks"], report["batches"]
    assert len(whole) == 5 and [len(r) for r in ranks] == [3, 3]  # 10 labels, 2 a batch: 5 batches, padded to 6
    got = [b for rank in ranks for b in rank]
    assert all(b in whole for b in got)  # every rank's batch is one of the sampler's, labels first
    assert sorted(map(tuple, got)) == sorted(map(tuple, whole + whole[:1]))
    assert all(min(b[:2]) >= 0 and max(b[:2]) < 10 and min(b[2:]) >= 10 for b in got)
    assert all(record["step"] == 3 * record["epoch"] for record in report["history"])
    assert all(v == v for record in report["history"] for v in record["train"].values())  # no NaN
