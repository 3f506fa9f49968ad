"""The inference form (``kdfiqa.models.fuse``): equal outputs for every registered model, batch norms
really folded, no more fvcore FLOPs, and the fused path of ``kdfiqa predict`` / ``evaluate``."""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import kdfiqa
from kdfiqa.budget import measure
from kdfiqa.checkpoint import build_checkpoint, save_checkpoint
from kdfiqa.cli.main import main
from kdfiqa.inference import FUSE_TOLERANCE, load_inference_model
from kdfiqa.models import create_model, deploy_config, fuse, list_models, set_deploy_config
from kdfiqa.models.emo_blocks import window_attention
from kdfiqa.models.emo_inference import fused_window_attention
from kdfiqa.models.fuse import count_batch_norms, fold_batch_norm, plan_fusion
from kdfiqa.models.registry import BACKBONES, MODELS

SIZE = 64
CLI_MODEL = "emo_1m"
FUSE_MODULE = sys.modules["kdfiqa.models.fuse"]
FLOP_MODELS = ("emo2_1m", "mobilenetv3_small_fiqa")
"""kdfiqa's EMO blocks and a timm network for the fvcore comparison (two counts per model)."""
LEFT = {"emo_1m": 3, "emo_2m": 5, "emo_5m": 5, "emo_6m": 5, "emo2_1m": 3, "emo2_2m": 5, "emo2_5m": 5,
        "emo2_20m": 5, "dualbranch_fiqa": 6}
"""Batch norms that stay: those reading a residual sum (EMO's input norms of residual blocks in stages
1-2, the dual-branch blocks' norms); every other one, heads' BatchNorm1d included, folds."""


def kdfiqa_models() -> list[str]:
    """Every name kdfiqa itself registers (other test files may register stand-ins)."""
    def module(name: str) -> str:
        return (MODELS if name in MODELS else BACKBONES).get(name).factory.__module__

    return [name for name in list_models() if module(name).startswith("kdfiqa.")]


def randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm non-trivial statistics and affine terms, so that folding shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) * 1.5 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                    m.bias.copy_(torch.rand(m.num_features, generator=generator) * 0.4 - 0.2)
    return model.eval()


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomise_norms(create_model(name, pretrained=False))


def calibrated(name: str) -> nn.Module:
    """``name`` with batch-norm statistics estimated on random images: its scores spread over images."""
    torch.manual_seed(0)
    model = create_model(name, pretrained=False)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average
    with torch.no_grad():
        model.train()(torch.rand(8, 3, 48, 56) * torch.rand(8, 1, 1, 1) * 4 - 2)
    return model.eval()


def batch(size: int = SIZE, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(size))


@pytest.mark.slow
@pytest.mark.parametrize("name", kdfiqa_models())
def test_inference_form_equals_the_eval_outputs_and_folds_the_batch_norms(name):
    model = build(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse(model, input_size=SIZE)
    x = batch()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=0, atol=FUSE_TOLERANCE)
    assert not fused.training and deploy_config(fused) == deploy_config(model)
    norms = count_batch_norms(model)
    assert count_batch_norms(fused) == LEFT.get(name, 0)
    assert count_batch_norms(fused) < norms or norms == 0, f"{name}: no batch norm folded"
    for key, value in model.state_dict().items():  # the original is untouched
        assert torch.equal(value, before[key]), key


@pytest.mark.slow
@pytest.mark.parametrize("name", FLOP_MODELS)
def test_fused_model_costs_no_more_fvcore_flops(name):
    model = build(name)
    fused = fuse(model, input_size=SIZE)
    original, folded = measure(model, SIZE), measure(fused, SIZE)
    assert folded.flops <= original.flops
    if count_batch_norms(model) > count_batch_norms(fused):
        assert folded.flops < original.flops


@pytest.mark.parametrize("conv, bn, shape", [
    (nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), (3, 4, 9, 9)),
    (nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.BatchNorm2d(6, affine=False), (3, 6, 9, 9)),
    (nn.Linear(5, 7), nn.BatchNorm1d(7), (3, 5)),
])
def test_fold_formula(conv, bn, shape):
    """W' = W·γ/σ, b' = (b − μ)·γ/σ + β: the folded layer equals layer → norm."""
    randomise_norms(bn)
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = bn(conv(x))
        fold_batch_norm(conv, bn)
        torch.testing.assert_close(conv(x), expected, rtol=0, atol=1e-5)


class Shared(nn.Module):
    """Cases that must not fold or run in place: a conv output also read by a residual sum, a
    batch norm after an activation, a conv run twice, and an activation whose input is reused."""

    def __init__(self) -> None:
        super().__init__()
        self.residual_conv, self.residual_bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
        self.act_conv, self.act, self.act_bn = nn.Conv2d(3, 3, 1), nn.ReLU(), nn.BatchNorm2d(3)
        self.twice, self.twice_bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
        self.reused = nn.SiLU()
        self.folds, self.folds_bn, self.inplace = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.residual_conv(x)
        y = self.residual_bn(y) + y
        y = self.act_bn(self.act(self.act_conv(y)))
        y = self.twice_bn(self.twice(self.twice(y)))
        y = self.reused(y) * y
        return self.inplace(self.folds_bn(self.folds(y)))


def test_shared_tensors_block_folding_and_in_place_activations():
    model = randomise_norms(Shared())
    x = torch.randn(2, 3, 8, 8)
    plan = plan_fusion(model, x)
    assert plan.pairs == (("folds", "folds_bn"),)
    assert plan.inplace == ("act", "inplace")
    fused = fuse(model, input_size=8)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=0, atol=1e-5)
    assert isinstance(fused.folds_bn, nn.Identity) and isinstance(fused.residual_bn, nn.BatchNorm2d)


@pytest.mark.parametrize("kind", ["grid", "close", "hybrid"])
@pytest.mark.parametrize("attn_pre", [False, True])
@pytest.mark.parametrize("hw, window", [((14, 14), 7), ((9, 13), 7), ((6, 5), 0)])
def test_inference_window_attention_equals_the_training_form(kind, attn_pre, hw, window):
    """One copy in, one out, channels-last: the same values, with padding, without, whole-map windows."""
    torch.manual_seed(0)
    qk, v = nn.Conv2d(8, 16, 1), nn.Conv2d(8, 12, 1)
    x = torch.randn(2, 8, *hw)
    options = {"num_heads": 2, "window_size": window, "kind": kind, "attn_pre": attn_pre}
    with torch.no_grad():
        expected = window_attention(x, qk, v, **options)
        got = fused_window_attention(x, qk, v, **options)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_public_names():
    assert kdfiqa.fuse is fuse


# ----------------------------------------------------------------------------------------------
# kdfiqa predict / evaluate
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fuse")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i, (h, w) in enumerate([(40, 52), (64, 48), (33, 90), (70, 70), (48, 61)]):
        name = f"img{i}.{'png' if i % 2 else 'jpg'}"
        pixels = rng.normal(40 + 45 * i, 10 + 15 * i, size=(h, w, 3))  # brightness and noise differ
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(images / name)
        names.append(name)
    labels = root / "labels.csv"
    labels.write_text("".join(f"{n},{s:.3f}\n" for n, s in zip(names, np.linspace(0.1, 0.9, len(names)))))
    model = calibrated(CLI_MODEL)
    set_deploy_config(model, deploy_config(model).replace(input_size=(3, 48, 56)))
    ckpt = root / "model.pt"
    save_checkpoint(ckpt, build_checkpoint(model))
    return {"images": images, "labels": labels, "ckpt": ckpt}


def _scores(path: Path) -> dict[str, float]:
    with open(path, newline="") as f:
        return {row["image"]: float(row["score"]) for row in csv.DictReader(f)}


def test_predict_fuses_by_default_and_no_fuse_gives_the_same_scores(data, tmp_path):
    assert load_inference_model(data["ckpt"]).fused
    assert not load_inference_model(data["ckpt"], fuse=False).fused
    fused, plain = tmp_path / "fused.csv", tmp_path / "plain.csv"
    assert main(["predict", str(data["ckpt"]), str(data["images"]), "--out", str(fused)]) == 0
    assert main(["predict", str(data["ckpt"]), str(data["images"]), "--out", str(plain), "--no-fuse"]) == 0
    a, b = _scores(fused), _scores(plain)
    assert a.keys() == b.keys() and len(a) == 5
    for name in a:
        assert a[name] == pytest.approx(b[name], abs=1e-5)


def test_evaluate_takes_no_fuse_too(data, capsys):
    args = ["evaluate", str(data["ckpt"]), "--root", str(data["images"]), "--csv", str(data["labels"]), "--json"]
    assert main(args) == 0
    fused = json.loads(capsys.readouterr().out)
    assert main([*args, "--no-fuse"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert fused == pytest.approx(plain, abs=1e-5)


def test_an_unverified_inference_form_falls_back_with_one_line(data, monkeypatch, caplog):
    original = FUSE_MODULE.fuse

    def off_by_one(model: nn.Module, **kwargs) -> nn.Module:
        fused = original(model, **kwargs)
        with torch.no_grad():
            fused.head.fc.bias.add_(1.0)
        return fused

    monkeypatch.setattr(FUSE_MODULE, "fuse", off_by_one)
    with caplog.at_level(logging.WARNING, logger="kdfiqa.inference"):
        loaded = load_inference_model(data["ckpt"])
    assert not loaded.fused and count_batch_norms(loaded.model) == count_batch_norms(calibrated(CLI_MODEL))
    notes = [record.getMessage() for record in caplog.records]
    assert len(notes) == 1 and "\n" not in notes[0] and "using the training form" in notes[0]
