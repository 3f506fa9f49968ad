"""EMO / EMOv2 blocks and backbones against the official counts, the official key layout and outputs
recorded from the official code (tests/fixtures/emo_reference.json), and a direct loop over the
window-attention equation."""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdfiqa._warnings import import_fvcore_nn
from kdfiqa.budget import VQUALA2025
from kdfiqa.errors import CheckpointError, ConfigError
from kdfiqa.models import EMOBackbone, create_backbone, iiRMB, iRMB, load_official_emo_weights, model_info
from kdfiqa.models.emo_blocks import make_act, window_attention

fvnn = import_fvcore_nn()

FIXTURE = Path(__file__).parent / "fixtures" / "emo_reference.json"
REFERENCE_CASES = ((64, 64), (97, 131))

# Official ImageNet models at 224x224 (fvcore, eval, batch 1): params, FLOPs (DESIGN.md table).
OFFICIAL_COUNTS = {
    "emo_1m": (1_361_168, 260_843_664),
    "emo_2m": (2_377_472, 439_363_064),
    "emo_5m": (5_108_848, 902_583_776),
    "emo_6m": (6_168_496, 960_752_512),
    "emo2_1m": (1_460_844, 284_756_712),
    "emo2_2m": (2_384_312, 487_454_824),
    "emo2_5m": (5_126_440, 1_035_473_760),
    "emo2_20m": (20_195_208, 4_017_165_376),
}
STUDENTS = ["emo_1m", "emo_2m", "emo2_1m", "emo2_2m"]


# --- deterministic weights and inputs shared with tests/fixtures/make_emo_reference.py ----------
def official_layout_state_dict(keys: list[list], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for a key/shape list: BN statistics and layer scales far from their defaults."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in keys:
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            state[key] = torch.tensor(1000)
        elif leaf == "running_mean":
            state[key] = 0.2 * torch.randn(shape, generator=g)
        elif leaf == "running_var":
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif leaf == "gamma":  # layer scale
            state[key] = 0.2 + 0.6 * torch.rand(shape, generator=g)
        elif len(shape) == 1:  # norm affine parameters and biases
            state[key] = (1.0 if leaf == "weight" else 0.0) + 0.1 * torch.randn(shape, generator=g)
        else:
            state[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    return state


def reference_input(h: int, w: int) -> torch.Tensor:
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(h * 1000 + w))


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """These models and inputs are tiny: extra intra-op threads only add overhead (and contention)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(FIXTURE.read_text())


def fvcore_flops(model: nn.Module, h: int = 224, w: int = 224) -> int:
    analysis = fvnn.FlopCountAnalysis(model.eval(), torch.randn(1, 3, h, w))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return int(analysis.total())


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def stride32(n: int) -> int:
    for _ in range(5):
        n = (n + 1) // 2
    return n


# --- official counts ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_official_param_and_flop_counts(name):
    torch.manual_seed(0)
    model = create_backbone(name, num_classes=1000)
    params, flops = OFFICIAL_COUNTS[name]
    assert n_params(model) == params
    assert fvcore_flops(model) == flops
    # Students fit vquala2025 at 224 without the ImageNet head (C x 1000 weights + bias, C x 1000
    # multiply-adds in fvcore); teachers do not.
    c = model.num_features
    fits = flops - 1000 * c <= VQUALA2025.max_gflops * 1e9 and params - 1001 * c <= VQUALA2025.max_params
    assert model_info(name).is_student == fits == (name in STUDENTS)


# --- official layout and outputs ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["emo_1m", "emo2_1m"])
def test_state_dict_layout_equals_official(reference, name):
    own = {k: list(v.shape) for k, v in create_backbone(name, num_classes=1000).state_dict().items()}
    assert own == {k: shape for k, shape in reference[name]["keys"]}


@pytest.mark.parametrize("name", ["emo_1m", "emo2_1m"])
@pytest.mark.parametrize("h,w", REFERENCE_CASES)
def test_official_weights_give_official_outputs(reference, name, h, w):
    ref = reference[name]
    model = create_backbone(name, num_classes=1000)
    load_official_emo_weights(model, official_layout_state_dict(ref["keys"]))
    model.eval()
    out = ref["outputs"][f"{h}x{w}"]
    x = reference_input(h, w)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    expected = torch.tensor(out["features"]).view(out["features_shape"])
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits.flatten(), torch.tensor(out["logits"]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,key", [("emo_1m", "stage2.1.conv_local.norm.running_var"),
                                      ("emo2_1m", "stage1.0.conv_local.norm.running_mean"),
                                      ("emo2_1m", "stage3.3.ls.gamma"),
                                      ("emo2_1m", "stage4.0.ls.gamma")])
def test_perturbed_statistics_and_layer_scales_change_features(reference, name, key):
    state = official_layout_state_dict(reference[name]["keys"])
    model = create_backbone(name, num_classes=1000).eval()
    load_official_emo_weights(model, state)
    x = reference_input(64, 64)
    with torch.no_grad():
        before = model.forward_features(x)
        state[key] = state[key] * 1.5
        load_official_emo_weights(model, state)
        after = model.forward_features(x)
    assert (before - after).abs().max() > 1e-3


# --- loading official checkpoints ---------------------------------------------------------------
def _official_state(name: str, reference: dict) -> dict[str, torch.Tensor]:
    return official_layout_state_dict(reference[name]["keys"], seed=3)


def test_load_wrapped_file_without_classifier(reference, tmp_path):
    state = _official_state("emo2_1m", reference)
    path = tmp_path / "EMOv2_1M_224.pth"
    torch.save({"net": {"module." + k: v for k, v in state.items()}}, path)
    backbone = create_backbone("emo2_1m", pretrained=str(path))
    own = backbone.state_dict()
    assert "head.weight" not in own
    for k, v in own.items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_load_into_regressor_like_module_with_classifier(reference, wrapper):
    state = _official_state("emo_1m", reference)
    holder = nn.Module()
    holder.backbone = create_backbone("emo_1m", num_classes=1000)
    load_official_emo_weights(holder, {wrapper: state})
    assert torch.equal(holder.backbone.head.weight, state["head.weight"])


def test_load_rejects_other_layouts(reference, tmp_path):
    state = _official_state("emo_1m", reference)
    with pytest.raises(CheckpointError, match="missing"):
        load_official_emo_weights(create_backbone("emo2_1m"), state)
    broken = dict(state)
    del broken["stage3.1.qk.conv.weight"]
    with pytest.raises(CheckpointError, match="stage3.1.qk.conv.weight"):
        load_official_emo_weights(create_backbone("emo_1m"), broken)
    with pytest.raises(CheckpointError, match="shape"):
        load_official_emo_weights(create_backbone("emo_1m", window_size=8), {
            **state, "stage4.0.v.conv.weight": torch.zeros(3, 3, 1, 1)})
    with pytest.raises(CheckpointError, match="no such file"):
        load_official_emo_weights(create_backbone("emo_1m"), tmp_path / "absent.pth")
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"net": state, "optimizer": object()}, unsafe)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_official_emo_weights(create_backbone("emo_1m"), unsafe)
    with pytest.raises(ConfigError, match="pretrained=True"):
        create_backbone("emo_1m", pretrained=True)


# --- window attention against a direct loop over the equation -----------------------------------
def loop_window_attention(x, qk, v, heads, ws, kind, attn_pre):
    """softmax(q k^T / sqrt(d)) v over each window, one window and one head at a time."""
    _, c, h, w = x.shape
    hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
    xp = torch.zeros(1, c, hp, wp)
    xp[..., :h, :w] = x
    n1, n2 = hp // ws, wp // ws
    keys_queries = qk(xp)[0]
    values = xp[0] if attn_pre else v(xp)[0]
    out = torch.zeros(values.shape)
    d, dv = c // heads, values.shape[0] // heads
    layouts = {"grid": ["grid"], "close": ["close"], "hybrid": ["grid", "close"]}[kind]
    for layout in layouts:
        for a in range(n1):
            for b in range(n2):
                if layout == "grid":
                    rows, cols = [a + n1 * i for i in range(ws)], [b + n2 * j for j in range(ws)]
                else:
                    rows, cols = [a * ws + i for i in range(ws)], [b * ws + j for j in range(ws)]
                pix = [(r, s) for r in rows for s in cols]
                for head in range(heads):
                    q = torch.stack([keys_queries[head * d:(head + 1) * d, r, s] for r, s in pix])
                    k = torch.stack([keys_queries[c + head * d:c + (head + 1) * d, r, s] for r, s in pix])
                    val = torch.stack([values[head * dv:(head + 1) * dv, r, s] for r, s in pix])
                    mixed = torch.softmax(q @ k.T / math.sqrt(d), dim=-1) @ val
                    for t, (r, s) in enumerate(pix):
                        out[head * dv:(head + 1) * dv, r, s] += mixed[t]
    out = out[None]
    if attn_pre:
        out = v(out)
    return out[..., :h, :w]


@pytest.mark.parametrize("kind", ["grid", "close", "hybrid"])
@pytest.mark.parametrize("attn_pre", [False, True])
def test_window_attention_matches_direct_loop(kind, attn_pre):
    torch.manual_seed(0)
    c, heads, mid = 8, 2, 12
    qk = nn.Conv2d(c, 2 * c, 1)
    v = nn.Sequential(nn.Conv2d(c, mid, 1), nn.GELU())
    x = torch.randn(1, c, 6, 11)
    got = window_attention(x, qk, v, num_heads=heads, window_size=4, kind=kind, attn_pre=attn_pre)
    with torch.no_grad():
        expected = loop_window_attention(x, qk, v, heads, 4, kind, attn_pre)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_window_size_zero_is_global_attention():
    torch.manual_seed(0)
    qk, v = nn.Conv2d(4, 8, 1), nn.Conv2d(4, 4, 1)
    x = torch.randn(1, 4, 5, 3)
    got = window_attention(x, qk, v, num_heads=1, window_size=0, kind="grid", attn_pre=False)
    q, k = qk(x).flatten(2)[0].T.chunk(2, dim=1)
    expected = torch.softmax(q @ k.T / 2.0, dim=-1) @ v(x).flatten(2)[0].T
    torch.testing.assert_close(got.flatten(2)[0].T, expected)


# --- resolutions, gradients, round trip, tracing ------------------------------------------------
@pytest.mark.parametrize("name", ["emo_1m", "emo2_1m"])
@pytest.mark.parametrize("h,w", [(224, 336), (97, 131), (512, 512), (32, 32)])
def test_any_resolution(name, h, w):
    torch.manual_seed(0)
    model = create_backbone(name).eval()
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = model(x)
    assert features.shape == (1, model.num_features, stride32(h), stride32(w))
    assert torch.isfinite(features).all()
    torch.testing.assert_close(pooled, model.norm(features).mean((2, 3)))


@pytest.mark.parametrize("name", ["emo_1m", "emo2_1m"])
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = create_backbone(name, drop_path_rate=0.0).train()
    model(torch.randn(2, 3, 64, 80)).square().sum().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []


def test_state_dict_round_trip(reference):
    model = create_backbone("emo2_1m").eval()
    model.load_state_dict({k: v for k, v in _official_state("emo2_1m", reference).items()
                           if not k.startswith("head.")})
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = create_backbone("emo2_1m").eval()
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDENTS)
def test_students_trace(name):
    torch.manual_seed(0)
    model = create_backbone(name).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        torch.testing.assert_close(traced(x), model(x))


def test_window_size_override():
    torch.manual_seed(0)
    model = create_backbone("emo2_1m", window_size=8)
    windows = {m.window_size for m in model.modules() if hasattr(m, "window_size")}
    assert windows == {8}
    assert n_params(model) == n_params(create_backbone("emo2_1m"))


# --- configurable blocks and backbones ----------------------------------------------------------
def test_custom_backbone_from_per_stage_lists():
    torch.manual_seed(0)
    model = EMOBackbone(
        depths=[1, 2, 2], embed_dims=[16, 32, 48], exp_ratios=[2, 2, 3], head_dims=[8, 8, 16],
        block="irmb", stem="emo", stem_dim=8, norms=["bn", "ln", "ln"], acts=["relu", "silu", "gelu"],
        dw_kernel_sizes=[3, 3, 5], window_sizes=[0, 4, 3], attn_kinds=["none", "close", "hybrid"],
        attn_pre=False, layer_scale=1e-2, num_classes=5,
    ).eval()
    assert model.num_features == 48
    assert model(torch.randn(2, 3, 50, 45)).shape == (2, 5)
    assert model.forward_features(torch.randn(1, 3, 50, 45)).shape == (1, 48, 4, 3)
    with pytest.raises(ValueError, match="divisible"):
        EMOBackbone(depths=[1, 2], embed_dims=[16, 30], exp_ratios=2, head_dims=16, attn_kinds="grid")
    with pytest.raises(ValueError, match="entries"):
        EMOBackbone(depths=[1, 2], embed_dims=[16, 32, 48], exp_ratios=2, head_dims=16)


@pytest.mark.parametrize("block", [iRMB, iiRMB])
def test_blocks_shapes_and_skip(block):
    torch.manual_seed(0)
    x = torch.randn(2, 16, 9, 13)
    down = block(16, 24, exp_ratio=4, stride=2, skip=False, attn="none", dw_kernel_size=5).eval()
    assert down(x).shape == (2, 24, 5, 7) and not down.has_skip
    same = block(16, 16, exp_ratio=2, attn="hybrid", head_dim=8, window_size=4, layer_scale=1e-3,
                 norm="ln", act="gelu").eval()
    assert same.has_skip
    out = same(x)
    # a residual block with a 1e-3 layer scale stays close to its input
    assert out.shape == x.shape and (out - x).abs().max() < 0.1
    with pytest.raises(ValueError, match="attention kind"):
        block(16, 16, attn="diagonal")


@pytest.mark.parametrize("block", [iRMB, iiRMB])
def test_drop_path_drops_whole_samples(block):
    torch.manual_seed(0)
    layer = block(4, 4, attn="none", drop_path=0.5).drop_path.train()
    out = layer(torch.ones(400, 3, 2, 2))
    per_sample = out.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()
    assert 120 < int((per_sample[:, 0] == 0).sum()) < 280
    assert torch.equal(layer.eval()(torch.ones(3, 2)), torch.ones(3, 2))
    assert F.mse_loss(out.mean(), torch.tensor(1.0)) < 0.05


def test_activations_by_name():
    """timm's factory behind EMO's names: exact (erf) GELU, 'none' and 'hswish', a clear error."""
    x = torch.linspace(-4, 4, 101)
    exact = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    torch.testing.assert_close(make_act("gelu")(x), exact, rtol=0, atol=1e-6)
    assert torch.equal(make_act("none")(x), x)
    assert torch.equal(make_act("hswish")(x), F.hardswish(x))
    with pytest.raises(ValueError, match="activation 'sigmoidish'"):
        make_act("sigmoidish")


class _HeadInput(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head_input(x)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["emo_1m", "emo2_1m"])
def test_trace_at_224_stays_valid_where_windows_need_padding(name):
    """At 224 no window needs padding; a trace taken there must still crop correctly at 97x131."""
    features = _HeadInput(create_backbone(name)).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(features, torch.randn(1, 3, 224, 224), check_trace=False)
        x = torch.randn(2, 3, 97, 131)
        expected = features(x)
        assert expected.shape[-2:] == (4, 5)
        torch.testing.assert_close(traced(x), expected, rtol=0, atol=1e-5)


def test_emo_stem_kernel_follows_the_first_depthwise_kernel_size():
    """As the official MSPatchEmb(kernel_size=dw_kss[0]): a 5x5 first-stage kernel gives a 5x5 stem."""
    from kdfiqa.models import create_backbone

    for first in (3, 5):
        backbone = create_backbone("emo_1m", dw_kernel_sizes=(first, 3, 5, 5))
        convs = [m for m in backbone.stage0[0].modules() if isinstance(m, nn.Conv2d)]
        assert convs[0].kernel_size == (first, first) and convs[0].stride == (2, 2)
        assert backbone.forward_features(torch.randn(1, 3, 64, 64)).shape[-1] == 2


def _layer_scales(model: nn.Module) -> set[float]:
    return {round(float(v), 12) for name, p in model.named_parameters() if name.endswith(".gamma") for v in p.detach().flatten()}


def test_from_scratch_emov2_starts_its_layer_scale_at_one_and_the_official_value_stays_reachable(tmp_path):
    from kdfiqa.models.emo import FROM_SCRATCH_LAYER_SCALE

    scratch = create_backbone("emo2_1m")
    official = create_backbone("emo2_1m", layer_scale=1e-6)
    assert FROM_SCRATCH_LAYER_SCALE == 1.0 and _layer_scales(scratch) == {1.0}
    assert _layer_scales(official) == {1e-6}
    # an initial value only: same parameters, same shapes
    assert {k: v.shape for k, v in scratch.state_dict().items()} == {k: v.shape for k, v in official.state_dict().items()}
    # pretrained weights replace it, and the official value is what they are loaded over
    path = tmp_path / "net.pth"
    torch.save(official.state_dict(), path)
    loaded = create_backbone("emo2_1m", pretrained=str(path))
    assert _layer_scales(loaded) == {1e-6}
    assert not _layer_scales(create_backbone("emo_1m"))  # EMO has no layer scale
