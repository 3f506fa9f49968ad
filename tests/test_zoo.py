"""The seed's model zoo: roles, gradients, budget fit counted by fvcore itself, architecture facts
(the contract every registered model keeps is tests/test_model_contract.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdfiqa._warnings import import_fvcore_nn
from kdfiqa.errors import ConfigError
from kdfiqa.models import create_model, list_models, model_info
from kdfiqa.models.dualbranch import LargeKernelBlock
from kdfiqa.models.lighthspa import LightHSPA, adaptive_avg_pool

fvnn = import_fvcore_nn()

ZOO = ["mobilenetv3_large_fiqa", "mobilenetv3_small_fiqa", "mobilenetv2_fiqa", "edgenext_xxs_fiqa",
       "dualbranch_fiqa", "lighthspa_fiqa"]


def perturb_batchnorm(module: nn.Module) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model(name)
    perturb_batchnorm(model)
    return model.eval()


def test_zoo_is_registered_as_students():
    assert set(ZOO) <= set(list_models())
    for name in ZOO:
        assert model_info(name).is_student


@pytest.mark.parametrize("name", ZOO)
def test_gradients_reach_every_parameter(name):
    model = build(name).train()
    model.forward_logits(torch.randn(2, 3, 64, 72)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert missing == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_fits_vquala2025_by_fvcore_at_default_size(name):
    model = create_model(name).eval()
    analysis = fvnn.FlopCountAnalysis(model, torch.randn(1, *model.default_input_size))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    assert 0 < analysis.total() <= 0.5e9
    assert fvnn.parameter_count(model)[""] <= 5_000_000
    assert "aten::scaled_dot_product_attention" not in analysis.unsupported_ops()


def test_edgenext_head_is_the_winners():
    model = create_model("edgenext_xxs_fiqa")
    linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(168, 128), (128, 1)]
    assert model.backbone.timm_name == "edgenext_xx_small"


def test_dualbranch_has_a_31x31_depthwise_branch_fused_with_mobilenetv2():
    model = build("dualbranch_fiqa")
    kernels = [m.kernel_size for m in model.modules()
               if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    assert (31, 31) in kernels
    assert model.default_input_size == (3, 224, 336)
    x = torch.randn(1, 3, 97, 131)
    local = model.backbone.local.forward_head_input(x)
    glob = model.backbone.global_branch(x)
    assert local.shape[-2:] == glob.shape[-2:] == (4, 5)
    assert model.backbone.num_features == local.shape[1] + glob.shape[1] == model.forward_features(x).shape[1]


def test_large_kernel_block_sees_15_pixels_away_and_no_further():
    torch.manual_seed(0)
    block = LargeKernelBlock(16, kernel_size=31, small_kernel=5).eval()
    x = torch.randn(1, 16, 1, 41, requires_grad=True)
    block(x)[0, :, 0, 20].sum().backward()
    reach = (x.grad[0].abs().sum(0)[0] > 0).nonzero().flatten()
    assert reach.min().item() == 5 and reach.max().item() == 35


def test_lighthspa_attention_equals_sdpa_on_pooled_keys():
    torch.manual_seed(0)
    attn = LightHSPA(32, num_heads=4, qk_reduction=2, pool_size=3).eval()
    perturb_batchnorm(attn)
    x = torch.randn(2, 32, 5, 7)
    pooled = F.adaptive_avg_pool2d(x, 3)

    def heads(t):  # (B, h*d, H, W) -> (B, h, HW, d)
        b, c, hh, ww = t.shape
        return t.reshape(b, 4, c // 4, hh * ww).transpose(-2, -1)

    q, k, v = heads(attn.q(x)), heads(attn.k(pooled)), heads(attn.v(pooled))
    assert q.shape[-1] == k.shape[-1] == 4 and k.shape[2] == 9
    mixed = F.scaled_dot_product_attention(q, k, v).transpose(-2, -1).reshape(2, 32, 5, 7)
    torch.testing.assert_close(attn(x), x + attn.proj(mixed), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("h, w", [(7, 7), (9, 11), (4, 5), (13, 3), (30, 17), (1, 1)])
def test_lighthspa_export_pooling_equals_adaptive_avg_pool(monkeypatch, h, w):
    x = torch.randn(2, 5, h, w, generator=torch.Generator().manual_seed(h * 100 + w))
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)  # the matrix form
    torch.testing.assert_close(adaptive_avg_pool(x, 7), F.adaptive_avg_pool2d(x, 7), rtol=0, atol=1e-6)


def test_lighthspa_options():
    model = build("lighthspa_fiqa")
    assert model.head.pool == "avgmax"
    assert any(isinstance(m, nn.Dropout) for m in model.head.modules())
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.head.modules())
    assert any(isinstance(m, LightHSPA) for m in model.modules())
    narrow = create_model("lighthspa_fiqa", width_mult=0.5, use_hspa=False)
    assert not any(isinstance(m, LightHSPA) for m in narrow.modules())
    count = lambda m: sum(p.numel() for p in m.backbone.blocks.parameters())  # noqa: E731
    assert count(narrow) < count(model) / 2
    with pytest.raises(ConfigError):
        create_model("lighthspa_fiqa", width_mult=0)
    with pytest.raises(ConfigError):
        create_model("lighthspa_fiqa", pretrained=True)


ECNU_WEIGHT_SEED, ECNU_INPUT_SEED, ECNU_INPUT_SHAPE = 0, 1, (2, 3, 288, 288)
ECNU_TEACHER_INPUT_SHAPE = (2, 3, 64, 80)
"""Small and non-square: the reference checks the network, not the resolution it was trained at."""
ECNU_REFERENCE = Path(__file__).resolve().parent / "fixtures" / "ecnu_reference.json"
ECNU_TEACHER_REFERENCE = ECNU_REFERENCE.with_name("ecnu_teacher_reference.json")


def winner_layout_state_dict() -> dict[str, torch.Tensor]:
    """The state dict the winner's FIQA_EdgeNeXt_XXS has when built with torch's generator seeded by
    ECNU_WEIGHT_SEED, in their layout: the same draws in the same order (timm's edgenext_xx_small with
    its 1000-class head, then the two quality layers), their head dropped as their code does."""
    import timm

    torch.manual_seed(ECNU_WEIGHT_SEED)
    backbone = timm.create_model("edgenext_xx_small", pretrained=False)
    quality = nn.Sequential(nn.Linear(168, 128), nn.Linear(128, 1))
    state = {f"feature_extraction.{k}": v for k, v in backbone.state_dict().items() if not k.startswith("head.")}
    state.update({f"quality.{k}": v for k, v in quality.state_dict().items()})
    return state


def _assert_rebuilt(state: dict[str, torch.Tensor], reference: dict) -> None:
    """``state`` holds the weights the reference was made with: every key, shape and sum."""
    assert {k: list(v.shape) for k, v in state.items()} == {k: shape for k, (shape, _) in reference["keys"].items()}
    for key, (_, total) in reference["keys"].items():
        assert float(state[key].double().sum()) == pytest.approx(total, rel=1e-9, abs=1e-9), key


def _assert_outputs(model: nn.Module, shape: tuple[int, ...], reference: dict, atol: float) -> None:
    """``model`` in eval mode gives the reference's outputs on the reference's inputs."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(ECNU_INPUT_SEED))
    with torch.no_grad():
        out = model.eval()(x).reshape(-1)
    assert torch.allclose(out, torch.tensor(reference["outputs"]), atol=atol, rtol=0)


def test_ecnu_sjtu_student_equals_the_winners_model():
    """Parameters and fvcore FLOPs of the leaderboard entry, and, on the winner's own state-dict layout,
    the outputs their released module gives (tests/fixtures/ecnu_reference.json, from their code)."""
    import json

    from kdfiqa.budget import measure
    from kdfiqa.models.deploy import deploy_config
    from kdfiqa.models.ecnu_sjtu import load_ecnu_sjtu_state_dict

    reference = json.loads(ECNU_REFERENCE.read_text())
    model = create_model("ecnu_sjtu_student")
    report = measure(model, 288)
    assert report.params == reference["params"] == 1_179_641 and report.flops == 331_310_822
    assert deploy_config(model).output == "linear" and deploy_config(model).input_size == (3, 352, 352)
    state = winner_layout_state_dict()
    _assert_rebuilt(state, reference)
    _assert_outputs(load_ecnu_sjtu_state_dict(model, state), ECNU_INPUT_SHAPE, reference, atol=1e-6)
    with pytest.raises(ConfigError, match="layout"):
        load_ecnu_sjtu_state_dict(model, {"backbone.x": torch.zeros(1)})


def winner_teacher_state_dict() -> dict[str, torch.Tensor]:
    """The weights the winner's ``FIQA_Swin_B(pretrained_path=None)`` draws after
    ``torch.manual_seed(ECNU_WEIGHT_SEED)``, in their layout: torchvision's swin_b (its 1000-class head
    dropped), the inner ``Swin_b_IQA`` quality layers their code draws and discards, then the two
    quality layers it keeps."""
    from torchvision.models import swin_b

    torch.manual_seed(ECNU_WEIGHT_SEED)
    backbone = swin_b()
    nn.Sequential(nn.Linear(1024, 128), nn.Linear(128, 1))  # drawn, then replaced by an identity
    quality = nn.Sequential(nn.Linear(1024, 128), nn.Linear(128, 1))
    state = {f"feature_extraction.feature_extraction.{k}": v for k, v in backbone.state_dict().items()
             if not k.startswith("head.")}
    state.update({f"quality.{k}": v for k, v in quality.state_dict().items()})
    return state


@pytest.mark.slow
def test_ecnu_sjtu_teacher_equals_the_winners_model():
    """The winner's teacher layout and outputs (tests/fixtures/ecnu_teacher_reference.json, made with
    their ``FIQA_Swin_B`` by tests/fixtures/make_ecnu_reference.py), loaded through the key map."""
    import json

    from kdfiqa.models.deploy import deploy_config
    from kdfiqa.models.ecnu_sjtu import load_ecnu_sjtu_state_dict

    reference = json.loads(ECNU_TEACHER_REFERENCE.read_text())
    model = create_model("ecnu_sjtu_teacher")
    assert sum(p.numel() for p in model.parameters()) == reference["params"]
    assert deploy_config(model).output == "linear" and deploy_config(model).input_size == (3, 448, 448)
    state = winner_teacher_state_dict()
    _assert_rebuilt(state, reference)
    loaded = load_ecnu_sjtu_state_dict(model, {f"module.{k}": v for k, v in state.items()})
    _assert_outputs(loaded, ECNU_TEACHER_INPUT_SHAPE, reference, atol=1e-5)
    with pytest.raises(ConfigError, match="layout"):
        load_ecnu_sjtu_state_dict(model, {"feature_extraction.model.x": torch.zeros(1)})

