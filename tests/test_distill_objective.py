"""Supervised objective and loss specs (kdfiqa.distill.objective)."""

from __future__ import annotations

import pytest
import torch

from distill_tiny_models import TinyFIQA, batch
from kdfiqa.distill import Supervised, as_weighted_sum
from kdfiqa.errors import ConfigError, DataError
from kdfiqa.losses import MSELoss, WeightedSum


def test_supervised_loss_is_mse_of_model_scores_against_mos():
    torch.manual_seed(0)
    model = TinyFIQA()
    b = batch(6)
    out = Supervised(model, "mse")(b)
    with torch.no_grad():
        scores = model(b["image"])[:, 0]
    expected = sum((float(s) - float(t)) ** 2 for s, t in zip(scores, b["score"])) / 6
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["mse"].item() == pytest.approx(expected, rel=1e-5)
    assert not out["mse"].requires_grad and out["loss"].requires_grad


def test_supervised_formula_weights_terms_and_backpropagates_into_model_only():
    torch.manual_seed(0)
    model = TinyFIQA()
    objective = Supervised(model, "2.0*mse + 0.5*l1")
    assert objective.model is model
    out = objective(batch(5))
    assert out["loss"].item() == pytest.approx(2.0 * out["mse"].item() + 0.5 * out["l1"].item(), rel=1e-6)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_loss_specs_name_module_mapping_and_weighted_sum():
    ws = WeightedSum("1.0*mse")
    assert as_weighted_sum(ws) is ws
    assert str(as_weighted_sum("mse")) == "Loss = 1.0 * mse"
    module = MSELoss()
    assert list(as_weighted_sum(module).terms.values()) == [module]
    assert as_weighted_sum({"mse": 0.25}).weights == {"mse": 0.25}
    with pytest.raises(ConfigError):
        as_weighted_sum("not_a_loss")


def test_supervised_on_unlabelled_batch_is_a_data_error():
    with pytest.raises(DataError, match="no 'score'"):
        Supervised(TinyFIQA())(batch(2, labels=False))
