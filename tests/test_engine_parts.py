"""Engine parts against direct formulas: schedules, EMA, config checks, rank splitting, AMP on CPU."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kdfiqa.engine.amp import autocast, grad_scaler
from kdfiqa.engine.config import TrainConfig
from kdfiqa.engine.distributed import RankSplitSampler
from kdfiqa.engine.ema import ModelEma
from kdfiqa.engine.optim import create_optimizer, create_schedule
from kdfiqa.errors import ConfigError


def lrs(config: TrainConfig, steps_per_epoch: int, metrics=None) -> list[float]:
    """The lr used at every step of the run, stepping the schedule as the Trainer does."""
    opt = create_optimizer([nn.Parameter(torch.zeros(1))], config)
    schedule = create_schedule(opt, config, steps_per_epoch)
    seen = []
    for epoch in range(config.epochs):
        for _ in range(steps_per_epoch):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.after_step()
        schedule.after_epoch(metrics[epoch] if metrics else None)
    return seen


def test_cosine_with_linear_warmup_matches_the_formula():
    cfg = TrainConfig(epochs=4, lr=0.1, scheduler="cosine", warmup_epochs=1, min_lr=0.001,
                      warmup_start_factor=0.1)
    got = lrs(cfg, steps_per_epoch=5)
    for t, lr in enumerate(got):
        if t < 5:
            expected = 0.1 * (0.1 + 0.9 * t / 5)
        else:
            expected = 0.001 + (0.1 - 0.001) * 0.5 * (1 + math.cos(math.pi * (t - 5) / 15))
        assert lr == pytest.approx(expected, rel=1e-9), t
    assert got[5] == pytest.approx(0.1)


def test_step_lr_decays_every_step_size_epochs():
    cfg = TrainConfig(epochs=7, lr=2e-3, scheduler="step", step_size=3, gamma=0.1)
    got = lrs(cfg, steps_per_epoch=2)
    assert got == pytest.approx([2e-3 * 0.1 ** (t // 2 // 3) for t in range(14)])


def test_plateau_decays_after_patience_epochs_without_improvement():
    cfg = TrainConfig(epochs=6, lr=1.0, scheduler="plateau", plateau_patience=1, gamma=0.5,
                      monitor="score")
    got = lrs(cfg, steps_per_epoch=1, metrics=[0.5, 0.6, 0.6, 0.6, 0.7, 0.7])
    assert got == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.5, 0.5])


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("sgd", torch.optim.SGD)])
def test_optimisers_by_name(name, cls):
    opt = create_optimizer([nn.Parameter(torch.zeros(1))], TrainConfig(optimizer=name, lr=0.3,
                                                                       weight_decay=0.01))
    assert type(opt) is cls
    assert opt.param_groups[0]["lr"] == 0.3 and opt.param_groups[0]["weight_decay"] == 0.01


def test_ema_follows_the_polyak_recursion():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEma(model, decay=0.8)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(5, 3))  # moves BN statistics
        ema.update(model)
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                expected[key] = 0.8 * expected[key] + 0.2 * value
            else:
                expected[key] = value.clone()
    for key, value in ema.module.state_dict().items():
        assert torch.allclose(value, expected[key], atol=1e-6), key
    assert ema.updates == 3 and not ema.module.training
    assert not any(p.requires_grad for p in ema.module.parameters())


@pytest.mark.parametrize("field, value", [("optimizer", "lamb"), ("scheduler", "poly"),
                                          ("batch_size", 0), ("amp", "fp8"), ("monitor", "loss"),
                                          ("ema_decay", 1.5), ("grad_clip", -1.0)])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_config_round_trips_through_a_plain_dict():
    cfg = TrainConfig(epochs=3, betas=[0.8, 0.9])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown field.*epohcs"):
        TrainConfig.from_dict({"epohcs": 3})


def test_rank_split_covers_the_base_order_with_padding():
    base = list(range(7))
    parts = [list(RankSplitSampler(base, 3, r)) for r in range(3)]
    assert [len(p) for p in parts] == [3, 3, 3]
    assert sorted(i for p in parts for i in p) == sorted(base + base[:2])


def test_amp_is_a_clean_no_op_on_cpu():
    cpu = torch.device("cpu")
    with autocast(cpu, "bf16"):
        y = nn.Linear(2, 2)(torch.randn(1, 2))
    assert y.dtype == torch.float32
    assert not grad_scaler(cpu, "fp16").is_enabled()
