"""``evaluating``: eval mode for a while, every module's own flag given back, optionally no autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdfiqa.modes import evaluating


def _mixed() -> nn.Module:
    """A training model holding a frozen (eval-mode) block, which itself holds a training layer."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.BatchNorm1d(2), nn.Dropout()), nn.Linear(2, 1))
    model.train()
    model[1].eval()
    model[1][1].train()
    return model


def _flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_every_module_in_eval_inside_and_its_own_flag_restored():
    model = _mixed()
    before = _flags(model)
    assert before == [True, True, False, False, True, True]
    with evaluating(model) as inside:
        assert inside is model
        assert not any(_flags(model))
    assert _flags(model) == before


def test_restored_after_an_exception():
    model = _mixed()
    before = _flags(model)
    with pytest.raises(RuntimeError, match="boom"):
        with evaluating(model):
            raise RuntimeError("boom")
    assert _flags(model) == before
    assert torch.is_grad_enabled()


def test_nested_uses_restore_in_turn():
    model = _mixed()
    before = _flags(model)
    with evaluating(model[1]):
        inner = _flags(model)
        with evaluating(model):
            assert not any(_flags(model))
        assert _flags(model) == inner
        assert not any(_flags(model[1])) and model.training
    assert _flags(model) == before


def test_no_grad_by_default_and_autograd_left_alone_on_request():
    model = nn.Linear(2, 1)
    x = torch.ones(1, 2)
    with evaluating(model):
        assert not torch.is_grad_enabled() and not model(x).requires_grad
    assert torch.is_grad_enabled()
    with evaluating(model, no_grad=False):
        assert model(x).requires_grad
    with torch.no_grad(), evaluating(model, no_grad=False):
        assert not torch.is_grad_enabled()  # the caller's setting stands

