"""The second counter: torch's FlopCounterMode beside fvcore, module by module, in multiply-adds."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kdfiqa.budget import measure
from kdfiqa.budget.crosscheck import cross_check
from kdfiqa.cli.main import main
from kdfiqa.models import create_model


def conv_linear() -> nn.Module:
    """3x9x9 → conv 3→4 (3x3, stride 2) → 4x4x4 → depth-wise 3x3 → flatten → linear 64→2."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=4),
                         nn.Flatten(), nn.Linear(64, 2))


CONV_LINEAR_MACS = 4 * 4 * 4 * (3 * 3 * 3) + 4 * 4 * 4 * (1 * 3 * 3) + 64 * 2
"""By hand: each output element of a convolution costs (C_in / groups) x k x k multiply-adds, each
output of a linear layer its in-features; biases are not counted (both counters' convention)."""

ATTENTION = '''
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Two heads of width 8 over the 10 rows of a 16-wide map, with fused attention."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(16, 48)

    def forward(self, x):
        q, k, v = self.qkv(x).reshape(1, 10, 3, 2, 8).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v)


class Scorer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attention()

    def forward(self, x):
        return self.attn(x[:, 0, :10, :16]).mean(dim=(1, 2, 3)).unsqueeze(1)


def scorer():
    return Scorer()
'''
QKV_MACS = 10 * 16 * 48
SDPA_MACS = 2 * 10 * 10 * 8 * 2
"""Q·Kᵀ and A·V for 2 heads, 10 queries, 10 keys, width 8: 2 x (2 x 10 x 10 x 8) multiply-adds."""


@pytest.fixture()
def attention(tmp_path, monkeypatch):
    path = tmp_path / "attention_models.py"
    path.write_text(ATTENTION)
    monkeypatch.syspath_prepend(str(tmp_path))
    import attention_models

    return path, attention_models.scorer()


def _counts_cpu_fused_attention() -> bool:
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu in FlopCounterMode().flop_registry


def test_both_counters_agree_exactly_on_convolutions_and_linear_layers():
    model = conv_linear()
    checked = cross_check(model, (3, 9, 9))
    assert checked.fvcore_macs == checked.flop_counter_macs == CONV_LINEAR_MACS
    assert checked.disagreements == [] and checked.relative_gap == 0
    assert measure(model, (3, 9, 9)).flops == CONV_LINEAR_MACS


def test_the_model_comes_back_as_it_was():
    model = conv_linear().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cross_check(model, (3, 9, 9))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.skipif(_counts_cpu_fused_attention(), reason="this torch's FlopCounterMode counts CPU fused attention")
def test_fused_attention_is_named_as_the_reason_of_the_disagreement(attention):
    _, model = attention
    checked = cross_check(model, (3, 10, 16))
    assert checked.fvcore_macs == QKV_MACS + SDPA_MACS
    assert checked.flop_counter_macs == QKV_MACS
    [disagreement] = checked.disagreements
    assert disagreement.module == "attn"
    assert (disagreement.fvcore_macs, disagreement.flop_counter_macs) == (SDPA_MACS, 0)
    assert disagreement.operators == ("scaled_dot_product_attention",)
    assert disagreement.reason.startswith("scaled_dot_product_attention: fvcore 3,200 MACs, FlopCounterMode 0")
    assert "_scaled_dot_product_flash_attention_for_cpu" in disagreement.reason  # the kernel it ran


def test_normalisation_counted_by_fvcore_alone_is_named_per_module():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LayerNorm(4 * 6 * 6)).eval()
    checked = cross_check(model, (3, 8, 8))
    by_module = {d.module: d for d in checked.disagreements}
    assert set(by_module) == {"1", "3"}
    assert by_module["1"].operators == ("batch_norm",) and by_module["1"].flop_counter_macs == 0
    assert "_native_batch_norm" in by_module["1"].reason
    assert by_module["3"].operators == ("layer_norm",) and "native_layer_norm" in by_module["3"].reason
    assert checked.flop_counter_macs == 4 * 6 * 6 * 27


@pytest.mark.slow
def test_registry_model_disagrees_only_where_explained_and_the_differences_add_up():
    """emo2_1m at 64x64: FlopCounterMode is within 3% of fvcore (it does not count norms or adaptive
    pooling); every disagreeing module names its operators and a reason, convolutions and matrix
    products never disagree, and the per-module differences sum to the difference of the totals."""
    model = create_model("emo2_1m")
    checked = cross_check(model, 64)
    assert checked.fvcore_macs == measure(model, 64).flops
    assert abs(checked.relative_gap) < 0.03
    assert checked.disagreements
    for d in checked.disagreements:
        assert d.reason and d.operators, d
        assert not {"conv", "linear", "matmul", "einsum"} & set(d.operators), d
    assert (sum(d.fvcore_macs - d.flop_counter_macs for d in checked.disagreements)
            == checked.fvcore_macs - checked.flop_counter_macs)


def _budget_json(capsys, *args: str) -> tuple[int, dict]:
    code = main(["budget", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_cli_json_has_the_cross_check_and_the_verdict_stays_fvcores(capsys, attention):
    path, _ = attention
    target = f"{path}:scorer"
    # 10,000 FLOPs: FlopCounterMode's 7,680 MACs would fit, fvcore's 10,880 do not
    limits = ("--input", "10x16", "--max-gflops", "0.00001")
    plain_code, plain = _budget_json(capsys, target, *limits)
    code, checked = _budget_json(capsys, target, *limits, "--cross-check")
    assert code == plain_code == 1
    assert checked["within"] is plain["within"] is False
    assert checked["results"] == plain["results"]
    assert set(checked) == set(plain) | {"cross_check"}
    cross = checked["cross_check"]
    assert set(cross) == {"input_size", "fvcore_macs", "flop_counter_macs", "relative_gap", "disagreements"}
    assert cross["input_size"] == [3, 10, 16] and cross["fvcore_macs"] == QKV_MACS + SDPA_MACS
    if not _counts_cpu_fused_attention():
        assert cross["flop_counter_macs"] == QKV_MACS  # on its count alone the model would pass
        [row] = cross["disagreements"]
        assert row["module"] == "attn" and row["operators"] == ["scaled_dot_product_attention"]
        assert set(row) == {"module", "fvcore_macs", "flop_counter_macs", "operators", "reason"}


@pytest.mark.slow
def test_cli_human_output_shows_both_totals_and_the_reasons(capsys):
    assert main(["budget", "emo2_1m", "--input", "64", "--cross-check"]) == 0
    out = capsys.readouterr().out
    assert "second counter at 3x64x64: FlopCounterMode" in out and "the verdict is fvcore's" in out
    assert "where the counters disagree" in out and "batch_norm" in out and "has no formula for it" in out


def test_cross_check_with_fill_is_a_usage_error(capsys):
    assert main(["budget", "emo2_1m", "--fill", "--cross-check"]) == 2
    assert "--cross-check" in capsys.readouterr().err
