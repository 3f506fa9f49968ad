"""Mixed batches of labeled and unlabeled samples: the label mask, the two-stream sampler, the loss
terms' shares and the teacher's calibration onto the label scale."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from distill_tiny_models import TinyFIQA, batch
from kdfiqa.checkpoint import load_checkpoint
from kdfiqa.data.samplers import TwoStreamSampler
from kdfiqa.distill import Distiller, Supervised
from kdfiqa.distill.objective import label_mask
from kdfiqa.engine import Callback, TrainConfig, Trainer
from kdfiqa.engine.distributed import RankSplitSampler
from kdfiqa.engine.progress import epoch_line
from kdfiqa.errors import ConfigError, DataError
from kdfiqa.metrics import Logistic4

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from engine_toys import ToyFaces, toy_distiller  # noqa: E402

NAN = float("nan")


class Recording(nn.Module):
    """A task loss (MSE) that keeps what it was given."""

    kind = "task"
    loss_name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.seen.append((pred.detach().clone(), target.detach().clone()))
        return (pred - target).pow(2).mean()


def _mixed(scores: list[float]) -> dict:
    out = batch(len(scores), seed=1)
    out["score"] = torch.tensor(scores)
    return out


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return TinyFIQA(6), TinyFIQA(4)


def test_label_mask_marks_nan_scores_and_a_batch_without_scores_as_unlabeled():
    assert label_mask(_mixed([0.2, NAN, 0.7])).tolist() == [True, False, True]
    assert label_mask(batch(3, labels=False)).tolist() == [False] * 3


def test_masked_samples_never_reach_the_task_loss_and_nan_never_reaches_the_total():
    teacher, student = _pair()
    spy = Recording()
    distiller = Distiller(teacher, student, task_loss=spy, distill_loss="temperature_mse")
    out = distiller(_mixed([0.2, NAN, 0.7, NAN]))
    (pred, target), = spy.seen
    assert target.tolist() == pytest.approx([0.2, 0.7])
    assert len(pred) == 2 and torch.isfinite(pred).all()
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["task"])
    # the distillation term sees every sample: the same value as on the batch with all labels
    labeled = distiller(_mixed([0.2, 0.1, 0.7, 0.4]))
    assert out["distill"].item() == pytest.approx(labeled["distill"].item(), rel=1e-6)


def test_the_task_term_has_exactly_zero_gradient_on_the_masked_samples_images():
    torch.manual_seed(0)
    model = TinyFIQA(4).eval()  # eval: batch norm does not couple the samples
    b = _mixed([0.3, NAN, 0.8, NAN])
    b["image"].requires_grad_(True)
    Supervised(model, "1.0*mse + 0.5*plcc")(b)["loss"].backward()
    grad = b["image"].grad.flatten(1).abs().sum(dim=1)
    assert grad[1] == 0 and grad[3] == 0
    assert grad[0] > 0 and grad[2] > 0


@pytest.mark.parametrize("scores", [[NAN, NAN, NAN], [0.4, NAN, NAN]])
def test_fewer_than_two_labels_give_a_finite_loss_and_gradient(scores):
    teacher, student = _pair()
    distiller = Distiller(teacher, student, task_loss="hybrid", distill_loss="temperature_mse")
    out = distiller(_mixed(scores))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
    if all(math.isnan(s) for s in scores):
        assert out["task"].item() == 0.0 and out["share/task"].item() == 0.0


def test_supervised_refuses_a_batch_without_a_label():
    with pytest.raises(DataError, match="no labeled sample"):
        Supervised(TinyFIQA())(_mixed([NAN, NAN]))


def test_shares_are_each_weighted_terms_part_of_the_total_and_sum_to_one():
    teacher, student = _pair()
    distiller = Distiller(teacher, student, task_loss="mse", distill_loss="temperature_mse",
                          feature_losses=[("backbone.4", "backbone.1", "feature", 0.5)],
                          task_weight=0.7, distill_weight=0.3)
    out = distiller(batch(4))
    parts = {"task": 0.7 * out["task"], "distill": 0.3 * out["distill"],
             "feature/backbone.4": 0.5 * out["feature/backbone.4"]}
    total = sum(abs(v.item()) for v in parts.values())
    for name, value in parts.items():
        assert out[f"share/{name}"].item() == pytest.approx(abs(value.item()) / total, rel=1e-5)
    assert sum(out[f"share/{n}"].item() for n in parts) == pytest.approx(1.0)
    line = epoch_line({"epoch": 1, "lr": 0.1, "images_per_s": 1.0, "time": 1.0, "val": {},
                       "train": {"loss": 1.0, "share/task": 0.25, "share/distill": 0.75}}, 3)
    assert "(task 25% distill 75%)" in line


def test_calibrated_teacher_logits_are_the_logit_of_the_fitted_logistic():
    teacher, student = _pair()
    mapping = Logistic4(0.9, 0.1, 0.45, 0.05)
    plain = Distiller(teacher, student).frozen_forward(batch(5)).logits
    calibrated = Distiller(teacher, student, teacher_calibration=mapping).frozen_forward(batch(5)).logits
    s = torch.sigmoid(plain.double())
    expected = (0.9 - 0.1) / (1 + torch.exp(-(s - 0.45) / 0.05)) + 0.1
    assert torch.allclose(torch.sigmoid(calibrated.double()), expected, atol=1e-6)


# ---------------------------------------------------------------------------------- the sampler


def _batches(sampler: TwoStreamSampler) -> list[list[int]]:
    order = list(sampler)
    return [order[i:i + sampler.batch_size] for i in range(0, len(order), sampler.batch_size)]


def test_every_batch_holds_exactly_the_labeled_share_and_an_epoch_passes_every_label():
    labeled, unlabeled = list(range(0, 10)), list(range(10, 23))
    sampler = TwoStreamSampler(labeled, unlabeled, batch_size=5, labeled_per_batch=3, seed=4)
    stream: list[int] = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        batches = _batches(sampler)
        assert len(batches) == math.ceil(10 / 3) and all(len(b) == 5 for b in batches)
        assert all(set(b[:3]) <= set(labeled) and set(b[3:]) <= set(unlabeled) for b in batches)
        assert set(labeled) <= {i for b in batches for i in b[:3]}  # every label once an epoch (one topped up)
        stream += [i for b in batches for i in b[3:]]
    for start in range(0, len(stream) - 13, 13):  # the unlabeled stream: whole orders, no repeat inside one
        assert sorted(stream[start:start + 13]) == unlabeled


def test_the_order_depends_on_seed_and_epoch_only_so_a_fresh_sampler_replays_it():
    a = TwoStreamSampler(range(7), range(7, 20), 4, 2, seed=1)
    seen = []
    for epoch in range(3):
        a.set_epoch(epoch)
        seen.append(list(a))
    b = TwoStreamSampler(range(7), range(7, 20), 4, 2, seed=1)
    b.set_epoch(2)
    assert list(b) == seen[2] and seen[0] != seen[1]
    assert list(TwoStreamSampler(range(7), range(7, 20), 4, 2, seed=2)) != seen[0]


def test_steps_per_epoch_follow_the_labels_whatever_the_unlabeled_share():
    lengths = set()
    for batch_size, unlabeled in ((4, 5), (8, 40), (3, 0)):
        sampler = TwoStreamSampler(range(11), range(11, 11 + unlabeled), batch_size, 3)
        lengths.add(len(DataLoader(range(11 + unlabeled), batch_size=batch_size, sampler=sampler)))
    assert lengths == {4}


def test_a_fixed_number_of_batches_draws_the_labels_in_fresh_orders():
    sampler = TwoStreamSampler(range(5), range(5, 40), 4, 2, seed=3, batches=7)
    batches = [list(sampler)[i:i + 4] for i in range(0, 28, 4)]
    assert len(sampler) == 28 and len(batches) == 7
    labeled = [i for b in batches for i in b[:2]]
    assert all(i < 5 for i in labeled) and all(i >= 5 for b in batches for i in b[2:])
    # 14 labeled places from orders of 5: every label 2 or 3 times, each order a permutation
    assert sorted(labeled[:5]) == list(range(5)) and sorted(labeled[5:10]) == list(range(5))
    with pytest.raises(DataError, match="batches"):
        TwoStreamSampler(range(5), range(5, 40), 4, 2, batches=0)


def test_bad_streams_are_refused():
    with pytest.raises(DataError, match="labeled_per_batch"):
        TwoStreamSampler(range(4), range(4, 8), 4, 5)
    with pytest.raises(DataError, match="no unlabeled"):
        TwoStreamSampler(range(4), [], 4, 2)


def test_ranks_get_whole_batches():
    base = TwoStreamSampler(range(9), range(9, 30), 4, 2, seed=0)  # 5 batches: padded to 6 for 2 ranks
    whole = _batches(base)
    shares = [list(RankSplitSampler(base, 2, rank)) for rank in (0, 1)]
    assert all(len(s) == len(RankSplitSampler(base, 2, 0)) == 12 for s in shares)
    got = [s[i:i + 4] for s in shares for i in range(0, 12, 4)]
    assert all(b in whole for b in got)
    assert sorted(map(tuple, got[:3] + got[3:])) == sorted(map(tuple, whole + whole[:1]))


def test_the_trainer_refuses_a_sampler_of_other_batches(tmp_path):
    config = TrainConfig(output_dir=str(tmp_path), epochs=1, batch_size=4, device="cpu", quiet=True)
    with pytest.raises(ConfigError, match="batches of 6"):
        Trainer(toy_distiller(), ToyFaces(12), None, config, sampler=TwoStreamSampler(range(6), range(6, 12), 6, 2))


class _HalfUnlabeled(Dataset):
    """ToyFaces whose samples from index 8 on have no label (score NaN)."""

    def __init__(self) -> None:
        self.faces = ToyFaces(18)

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int) -> dict:
        item = self.faces[i]
        return {**item, "score": torch.tensor(NAN) if i >= 8 else torch.as_tensor(item["score"])}


class _CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, step, terms) -> None:
        if step == self.step:
            raise RuntimeError("simulated crash")


def _run(out: Path, resume: Path | None = None, crash_at: int | None = None) -> None:
    torch.manual_seed(0)
    config = TrainConfig(output_dir=str(out), epochs=2, batch_size=4, lr=0.05, optimizer="sgd", save_every_steps=2,
                         device="cpu", deterministic=True, seed=3, quiet=True)
    sampler = TwoStreamSampler(range(8), range(8, 18), 4, 2, seed=3)  # 4 steps an epoch
    Trainer(toy_distiller(), _HalfUnlabeled(), None, config, sampler=sampler,
            callbacks=[_CrashAt(crash_at)] if crash_at else []).fit(resume)


def test_a_mixed_run_resumed_mid_epoch_ends_bit_identical(tmp_path):
    _run(tmp_path / "a")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tmp_path / "b", crash_at=7)
    path = tmp_path / "b" / "last.pt"
    assert load_checkpoint(path)["trainer"]["batch_in_epoch"] == 2  # step 6: mid-epoch 2
    _run(tmp_path / "b", resume=path)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(path)
    assert a["step"] == b["step"] == 8
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    history = a["trainer"]["history"]
    assert all(math.isfinite(v) for r in history for v in r["train"].values())
    shares = [v for k, v in history[-1]["train"].items() if k.startswith("share/")]
    assert len(shares) == 3 and sum(shares) == pytest.approx(1.0)
