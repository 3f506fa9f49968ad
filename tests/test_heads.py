"""QualityHead against the equations written out, FIQARegressor's contract, and TimmBackbone vs timm."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn

from kdfiqa.errors import ConfigError
from kdfiqa.models import FIQARegressor, QualityHead, TimmBackbone, create_model


def perturb_batchnorm(module: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so eval-mode BN is not the identity."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def reference_head(head: QualityHead, pooled: torch.Tensor, *, relu: bool = True) -> torch.Tensor:
    """The 2077Agent head in eval mode, one sample and one unit at a time from the module's weights."""
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    norms = [m for m in head.mlp if isinstance(m, nn.BatchNorm1d)]
    out = []
    for x in pooled.tolist():
        for i, lin in enumerate(linears):
            y = []
            for j in range(lin.out_features):
                z = sum(w * v for w, v in zip(lin.weight[j].tolist(), x)) + lin.bias[j].item()
                if norms:
                    bn = norms[i]
                    z = (z - bn.running_mean[j].item()) / math.sqrt(bn.running_var[j].item() + bn.eps)
                    z = z * bn.weight[j].item() + bn.bias[j].item()
                y.append(max(z, 0.0) if relu else z)
            x = y
        out.append(sum(w * v for w, v in zip(head.fc.weight[0].tolist(), x)) + head.fc.bias[0].item())
    return torch.tensor(out).unsqueeze(1)


def test_default_head_is_two_bottlenecks_then_sigmoid():
    torch.manual_seed(0)
    head = QualityHead(12, hidden=(6, 4))
    perturb_batchnorm(head)
    head.eval()
    kinds = [type(m) for m in head.mlp]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2
    x = torch.randn(3, 12, 5, 7)
    expected = reference_head(head, x.mean(dim=(2, 3)).double())
    logits = head.forward_logits(x)
    assert logits.shape == (3, 1)
    torch.testing.assert_close(logits.double(), expected.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head(x), 1 / (1 + torch.exp(-logits)))


def test_avgmax_pooling_concatenates_average_and_max():
    torch.manual_seed(0)
    head = QualityHead(5, hidden=(3,), pool="avgmax").eval()
    assert head.mlp[0].in_features == 10
    x = torch.randn(2, 5, 4, 6)
    flat = x.reshape(2, 5, -1)
    expected = torch.cat([flat.sum(-1) / 24, flat.max(-1).values], dim=1)
    torch.testing.assert_close(head.pool_features(x), expected)


def test_pool_none_takes_vectors_and_options_shape_the_mlp():
    torch.manual_seed(0)
    head = QualityHead(8, hidden=(), pool="none", out_activation=None).eval()
    assert len(head.mlp) == 0
    v = torch.randn(4, 8)
    torch.testing.assert_close(head(v), v @ head.fc.weight.T + head.fc.bias)
    torch.testing.assert_close(head(v), head.forward_logits(v))
    plain = QualityHead(8, hidden=(5, 3), norm=None, pool="none").eval()
    assert not any(isinstance(m, nn.BatchNorm1d) for m in plain.modules())
    torch.testing.assert_close(plain.forward_logits(v).double(),
                               reference_head(plain, v.double(), relu=True).double(), rtol=1e-5, atol=1e-5)
    assert [type(m) for m in QualityHead(8, hidden=(5,), act="gelu").mlp] == [nn.Linear, nn.BatchNorm1d, nn.GELU]


def test_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    head = QualityHead(16, hidden=(32, 32), dropout=0.5)
    assert sum(isinstance(m, nn.Dropout) for m in head.modules()) == 2
    x = torch.randn(8, 16, 3, 3)
    head.train()
    assert not torch.equal(head(x), head(x))
    head.eval()
    assert torch.equal(head(x), head(x))


@pytest.mark.parametrize("bad", [dict(pool="sum"), dict(norm="layernorm"), dict(act="tanh"),
                                 dict(out_activation="softmax"), dict(dropout=1.0)])
def test_invalid_head_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        QualityHead(8, **bad)


class TinyBackbone(nn.Module):
    """Two convs, stride 4: a stand-in backbone with ``forward_features`` and ``num_features``."""

    num_features = 6

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.Conv2d(4, 6, 3, 2, 1))

    def forward_features(self, x):
        return self.body(x)


class NormedBackbone(TinyBackbone):
    """Defines ``forward_head_input``: the regressor must feed the head with it."""

    def __init__(self) -> None:
        super().__init__()
        self.final_norm = nn.BatchNorm2d(6)

    def forward_head_input(self, x):
        return self.final_norm(self.forward_features(x))


def test_regressor_contract_on_a_stand_in_backbone():
    torch.manual_seed(0)
    model = FIQARegressor(TinyBackbone(), head={"hidden": (5, 4)}, default_input_size=(3, 40, 56))
    perturb_batchnorm(model)
    model.eval()
    x = torch.randn(3, 3, 37, 53)
    out = model(x)
    assert out.shape == (3, 1) and bool(((out > 0) & (out < 1)).all())
    torch.testing.assert_close(out, torch.sigmoid(model.forward_logits(x)))
    assert model.forward_features(x).shape == (3, 6, 10, 14)
    assert model.default_input_size == (3, 40, 56)
    torch.testing.assert_close(model.forward_logits(x), model.head.forward_logits(model.backbone.body(x)))


def test_regressor_feeds_forward_head_input_when_defined():
    torch.manual_seed(0)
    model = FIQARegressor(NormedBackbone())
    perturb_batchnorm(model)
    model.eval()
    x = torch.randn(2, 3, 33, 33)
    feats = model.backbone.body(x)
    torch.testing.assert_close(model.forward_logits(x), model.head.forward_logits(model.backbone.final_norm(feats)))
    assert not torch.allclose(model.forward_logits(x), model.head.forward_logits(feats))


def test_regressor_rejects_unknown_head_options():
    with pytest.raises(ConfigError, match="hiden"):
        FIQARegressor(TinyBackbone(), head={"hiden": (4,)})


def test_timm_backbone_pooled_matches_timm_pre_logits():
    torch.manual_seed(0)
    backbone = TimmBackbone("mobilenetv3_small_050")
    reference = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=1000)
    missing, unexpected = reference.load_state_dict(backbone.model.state_dict(), strict=False)
    assert not unexpected and set(missing) == {"classifier.weight", "classifier.bias"}
    perturb_batchnorm(backbone)
    reference.load_state_dict(backbone.model.state_dict(), strict=False)
    backbone.eval(), reference.eval()
    x = torch.randn(2, 3, 97, 131)
    expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
    torch.testing.assert_close(backbone.forward_head_input(x), expected)
    torch.testing.assert_close(backbone.forward_features(x), reference.forward_features(x))
    assert backbone.num_features == reference.num_features
    assert backbone.head_input_features == expected.shape[1] == reference.head_hidden_size
    assert backbone.head_input_pooled


def test_timm_backbone_unpooled_gives_a_map_the_head_pools():
    torch.manual_seed(0)
    backbone = TimmBackbone("mobilenetv3_small_050", pooled=False)
    model = FIQARegressor(backbone, head={"pool": "avgmax"}).eval()
    x = torch.randn(2, 3, 64, 80)
    feats = backbone.forward_head_input(x)
    assert feats.shape == (2, backbone.head_input_features, 2, 3)
    assert model.head.mlp[0].in_features == 2 * backbone.head_input_features
    assert model(x).shape == (2, 1)
    with pytest.raises(ConfigError, match="pooled=False"):
        FIQARegressor(TimmBackbone("mobilenetv3_small_050"), head={"pool": "avgmax"})


def test_timm_prefix_and_pretrained_pass_through(monkeypatch):
    model = create_model("timm:mobilenetv3_small_050", head={"hidden": (16,)})
    assert isinstance(model, FIQARegressor) and isinstance(model.backbone, TimmBackbone)
    assert model.model_name == "timm:mobilenetv3_small_050"
    seen = {}

    def fake_create_model(name, **kwargs):
        seen.update(kwargs, name=name)
        raise RuntimeError("stop")

    monkeypatch.setattr(timm, "create_model", fake_create_model)
    with pytest.raises(RuntimeError, match="stop"):
        TimmBackbone("resnet18", pretrained=True, drop_rate=0.1)
    assert seen == {"name": "resnet18", "pretrained": True, "num_classes": 0, "drop_rate": 0.1}


def test_unknown_timm_model_is_a_config_error():
    with pytest.raises(ConfigError, match="no_such_net"):
        create_model("timm:no_such_net")
