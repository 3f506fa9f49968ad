"""The contract every model kdfiqa registers keeps, checked for each name ``list_models()`` returns, so a
newly registered model is covered without editing a list.

Built with ``pretrained=False``: scores of shape (B, 1), finite, in (0, 1) for a sigmoid output, at two
resolutions (one with odd sides), consistent with ``forward_logits``, and a 4-D ``forward_features``
map; measurable by fvcore; a state-dict round trip into a fresh model gives the same outputs;
TorchScript tracing works at another size; the attached deploy config describes the model and
survives ``to_dict``/``from_dict``. Small inputs keep the file fast on a CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdfiqa.budget import measure
from kdfiqa.data import build_transform
from kdfiqa.models import DeployConfig, create_model, list_models, model_info
from kdfiqa.models.deploy import attached_deploy_config
from kdfiqa.models.registry import BACKBONES, MODELS

SIZES = ((64, 64), (81, 67))
BATCH = 2

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:`torch.jit:FutureWarning")


def kdfiqa_models() -> list[str]:
    """Every name kdfiqa itself registers (test suites may register stand-ins of their own)."""
    def module(name: str) -> str:
        return (MODELS if name in MODELS else BACKBONES).get(name).factory.__module__

    return [name for name in list_models() if module(name).startswith("kdfiqa.")]


def build(name: str, seed: int) -> nn.Module:
    """``name`` with random weights and non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = create_model(name, pretrained=False)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module", params=kdfiqa_models())
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def model(name: str) -> nn.Module:
    return build(name, seed=0)


def inputs(h: int, w: int) -> torch.Tensor:
    return torch.randn(BATCH, 3, h, w, generator=torch.Generator().manual_seed(h * w))


def test_the_registry_is_not_empty():
    assert len(kdfiqa_models()) >= 14


@pytest.mark.slow
def test_scores_logits_and_features_at_two_sizes(model):
    sigmoid = attached_deploy_config(model).output == "sigmoid"
    for h, w in SIZES:
        x = inputs(h, w)
        with torch.no_grad():
            out, logits, features = model(x), model.forward_logits(x), model.forward_features(x)
        assert out.shape == logits.shape == (BATCH, 1) and bool(torch.isfinite(out).all())
        torch.testing.assert_close(out, torch.sigmoid(logits) if sigmoid else logits)
        if sigmoid:
            assert bool(((out > 0) & (out < 1)).all())
        assert features.dim() == 4 and features.shape[0] == BATCH


@pytest.mark.slow
def test_measurable_at_a_small_size(model):
    report = measure(model, SIZES[0])
    assert report.flops > 0 and report.params == sum(p.numel() for p in model.parameters())
    assert report.input_size == (3, *SIZES[0])


@pytest.mark.slow
def test_state_dict_round_trip_into_a_fresh_model(name, model):
    fresh = build(name, seed=1)
    fresh.load_state_dict(model.state_dict(), strict=True)
    x = inputs(*SIZES[1])
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


@pytest.mark.slow
def test_torchscript_trace_runs_at_another_size(model):
    with torch.no_grad():
        traced = torch.jit.trace(model, inputs(*SIZES[0]), check_trace=False)
        x = inputs(*SIZES[1])
        torch.testing.assert_close(traced(x), model(x), rtol=1e-4, atol=1e-5)


def test_deploy_config_is_attached_and_round_trips(name, model):
    config = attached_deploy_config(model)
    assert isinstance(config, DeployConfig) and config.name == model.model_name == name
    assert config.input_size == model_info(name).default_input_size
    assert "pretrained" not in config.kwargs
    assert DeployConfig.from_dict(config.to_dict()) == config
    assert config.eval_transform["normalize"] == config.normalize == model_info(name).normalize
    build_transform(dict(config.eval_transform))
