"""The budget checker against fvcore's own totals, hand counts, and the model it measures."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from kdfiqa._warnings import import_fvcore_nn
from kdfiqa.budget import (
    VQUALA2025,
    Budget,
    BudgetExceeded,
    MeasurementError,
    check,
    measure,
    parse_input_size,
)

fvnn = import_fvcore_nn()


def fvcore_total(model: nn.Module, h: int, w: int) -> int:
    analysis = fvnn.FlopCountAnalysis(model.eval(), torch.randn(1, 3, h, w))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return int(analysis.total())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenetv3_small_100", "mobilenetv2_100", "edgenext_xx_small",
                                  "efficientnet_b0"])
@pytest.mark.parametrize("res", [224, 288])
def test_matches_fvcore_on_timm_models(name, res):
    model = timm.create_model(name, pretrained=False)
    report = measure(model, res)
    assert report.flops == fvcore_total(model, res, res)
    assert report.params == sum(p.numel() for p in model.parameters())
    assert report.input_size == (3, res, res)
    assert sum(report.by_module.values()) == report.flops


def test_hand_counted_conv_and_linear():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 10 * 12, 5))
    report = measure(model, (10, 12))
    conv = 10 * 12 * 8 * 3 * 3 * 3  # output pixels x out channels x (in channels x kernel)
    linear = 8 * 10 * 12 * 5
    assert report.flops == conv + linear
    assert report.params == 8 * 3 * 9 + 8 + 960 * 5 + 5
    assert report.by_module == {"0": conv, "2": linear}


class Attention(nn.Module):
    """Single-head attention over the pixels of a (B, C, H, W) map, fused or written out."""

    def __init__(self, dim: int, fused: bool) -> None:
        super().__init__()
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.fused = fused

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).flatten(2).transpose(1, 2).chunk(3, dim=-1)
        if self.fused:
            return F.scaled_dot_product_attention(q, k, v)
        return ((q @ k.transpose(-2, -1)) * c ** -0.5).softmax(-1) @ v


def test_fused_attention_costs_as_much_as_explicit():
    h, w, c = 6, 5, 3
    fused, explicit = Attention(c, True), Attention(c, False)
    explicit.load_state_dict(fused.state_dict())
    n = h * w
    by_hand = n * c * 3 * c + n * n * c + n * n * c  # qkv projection, Q·Kᵀ, A·V
    assert measure(explicit, (c, h, w)).flops == by_hand == fvcore_total(explicit, h, w)
    assert measure(fused, (c, h, w)).flops == by_hand
    # fvcore alone lets the fused model pass for free: that is what the handle prevents.
    assert fvcore_total(fused, h, w) == n * c * 3 * c


def test_measure_restores_train_mode_bn_stats_and_grads():
    model = timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=3)
    model.train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()  # gives BN stats and gradients to keep
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.blocks[0].eval()  # a mixed state must come back mixed
    modes = {n: m.training for n, m in model.named_modules()}
    measure(model, 96)
    assert {n: m.training for n, m in model.named_modules()} == modes
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), n


def test_unused_parameters_are_reported():
    class WithProjector(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.projector = nn.Linear(4, 64)  # a distillation projector left inside the student

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    report = measure(WithProjector(), 16)
    assert sorted(report.unused_params) == ["projector.bias", "projector.weight"]
    assert report.params == 4 * 27 + 4 + 4 * 64 + 64


def test_unused_parameters_found_for_fixed_size_models_too():
    class FixedSize(nn.Module):
        """Accepts only 96x96 inputs (like a ViT with a fixed position table)."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.spare = nn.Parameter(torch.zeros(7))

        def forward(self, x):
            if x.shape[-1] != 96:
                raise ValueError("this model only takes 96x96 images")
            return self.conv(x).mean((2, 3))

    report = measure(FixedSize(), 96)
    assert report.unused_params == ["spare"]
    assert report.flops == 94 * 94 * 4 * 27


@pytest.mark.slow
def test_check_raises_with_resolution_and_costliest_modules():
    model = timm.create_model("mobilenetv3_small_100", pretrained=False)
    at_128, at_224 = measure(model, 128), measure(model, 224)
    budget = Budget(max_gflops=(at_128.gflops + at_224.gflops) / 2, max_params=5_000_000, name="mid")
    reports = check(model, budget, 128)
    assert [r.flops for r in reports] == [at_128.flops]
    with pytest.raises(BudgetExceeded) as err:
        check(model, budget, [128, (224, 224)])
    message = str(err.value)
    assert "budget mid" in message and "3x224x224" in message and f"{budget.max_gflops:g} allowed" in message
    top = err.value.report.costliest(5)
    assert len(top) == 5 and all(name in message for name, _ in top)
    assert err.value.report.flops == at_224.flops
    tight = Budget(max_gflops=10.0, max_params=1_000_000, name="tiny-params")
    with pytest.raises(BudgetExceeded, match="params > 1,000,000 allowed"):
        check(model, tight, 64)


def test_vquala2025_preset():
    assert (VQUALA2025.max_gflops, VQUALA2025.max_params, VQUALA2025.name) == (0.5, 5_000_000, "vquala2025")


def test_data_dependent_cost_is_an_error_not_a_pass():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.small = nn.Conv2d(3, 3, 1)
            self.big = nn.Conv2d(3, 64, 7)

        def forward(self, x):
            return self.big(x) if x.mean() > 0 else self.small(x)

    with pytest.raises(MeasurementError, match="depends on the input"):
        check(Branchy(), VQUALA2025, 32)


def test_untraceable_model_is_an_error():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return {"a": set()}  # not a traceable output

    with pytest.raises(MeasurementError, match="could not trace"):
        check(Untraceable(), VQUALA2025, 16)


@pytest.mark.parametrize("given,expected", [
    (224, (3, 224, 224)), ((224, 336), (3, 224, 336)), ((1, 97, 131), (1, 97, 131)),
    ("224x336", (3, 224, 336)), ("512", (3, 512, 512)),
])
def test_parse_input_size(given, expected):
    assert parse_input_size(given) == expected


def test_batch_size_scales_linearly():
    model = timm.create_model("mobilenetv3_small_100", pretrained=False)
    assert measure(model, 64, batch_size=3).flops == 3 * measure(model, 64).flops


def test_a_model_just_over_the_limit_is_told_by_how_much():
    from kdfiqa.budget import CostReport

    just_over = CostReport(flops=500_000_001, params=10, input_size=(3, 224, 224))
    message = str(BudgetExceeded(VQUALA2025, just_over, "m"))
    assert "0.500000001 GFLOPs (500,000,001 FLOPs) > 0.5 allowed" in message, message
    assert "0.6000 GFLOPs > 0.5" in str(BudgetExceeded(VQUALA2025, CostReport(600_000_000, 10, (3, 224, 224)), "m"))
    assert just_over.as_dict()["flops"] == 500_000_001


def test_an_input_size_past_any_image_is_refused_before_anything_is_allocated():
    from kdfiqa.budget import MAX_SIDE, parse_input_size
    from kdfiqa.errors import KdfiqaError

    assert parse_input_size((MAX_SIDE, 32)) == (3, MAX_SIDE, 32)
    for size in (100_000, (32, MAX_SIDE + 1), "224x100000"):
        with pytest.raises(KdfiqaError, match="over 16384 pixels"):
            parse_input_size(size)
