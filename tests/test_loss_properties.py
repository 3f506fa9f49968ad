"""Property tests (hypothesis) of the losses: invariances the equations imply, and robustness."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdfiqa.losses import create_loss, list_losses

SETTINGS = settings(max_examples=50, deadline=None)

scores = st.floats(0.0, 1.0, allow_nan=False)


def spread_batch(min_size: int = 3, max_size: int = 12):
    """Score batches whose values are not all close together (PLCC is well conditioned)."""
    return st.lists(scores, min_size=min_size, max_size=max_size).filter(lambda v: max(v) - min(v) > 0.05)


@SETTINGS
@given(
    data=st.data(),
    pred=spread_batch(),
    a=st.floats(0.1, 10.0),
    b=st.floats(-5.0, 5.0),
    name=st.sampled_from(["plcc", "plcc_nin"]),
)
def test_correlation_losses_invariant_to_positive_affine_maps_of_predictions(data, pred, a, b, name):
    target = data.draw(spread_batch(len(pred), len(pred)))
    p, y = torch.tensor(pred, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    loss = create_loss(name)
    assert loss(a * p + b, y).item() == pytest.approx(loss(p, y).item(), abs=1e-6)


@SETTINGS
@given(
    pred=st.lists(scores, min_size=2, max_size=10),
    data=st.data(),
    power=st.floats(0.2, 5.0),
    shift=st.floats(-3.0, 3.0),
)
def test_rank_depends_on_targets_only_through_their_ordering(pred, data, power, shift):
    levels = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)  # few levels: many ties
    index = data.draw(st.lists(st.integers(0, 4), min_size=len(pred), max_size=len(pred)))
    p, y = torch.tensor(pred, dtype=torch.float64), levels[index]
    # Strictly increasing map applied to the levels, then indexed: tied targets stay bit-identical
    # (applied element-wise, vectorised and scalar lanes of exp/pow may round a tie apart).
    monotone = (torch.exp(3 * levels).pow(power) + shift)[index]
    loss = create_loss("rank")
    assert loss(p, monotone).item() == pytest.approx(loss(p, y).item(), rel=1e-12, abs=1e-15)
    perm = torch.randperm(len(pred), generator=torch.Generator().manual_seed(len(pred)))
    assert loss(p[perm], y[perm]).item() == pytest.approx(loss(p, y).item(), rel=1e-12, abs=1e-15)


@SETTINGS
@given(
    omega=st.floats(0.001, 1.0),
    epsilon=st.floats(0.01, 10.0),
    target=scores,
    side=st.sampled_from([-1.0, 1.0]),
)
def test_wing_is_continuous_at_omega(omega, epsilon, target, side):
    loss = create_loss("wing", omega=omega, epsilon=epsilon)
    y = torch.tensor([target], dtype=torch.float64)
    at_omega = omega * math.log1p(omega / epsilon)
    delta = 1e-9
    inside = loss(y + side * (omega - delta), y).item()
    outside = loss(y + side * (omega + delta), y).item()
    exactly = loss(y + side * omega, y).item()
    for v in (inside, outside, exactly):
        assert v == pytest.approx(at_omega, abs=1e-8)


def build(name: str) -> torch.nn.Module:
    return create_loss(name, **({"teacher_channels": 3} if name == "feature" else {}))


def call(loss: torch.nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if loss.kind == "pair":
        return loss(pred, target, torch.full_like(pred, 0.5))
    if loss.kind == "feature":
        return loss(pred[:, None].expand(-1, 2), target[:, None].expand(-1, 3))
    return loss(pred, target)


batches = st.integers(1, 3).flatmap(
    lambda n: st.tuples(
        st.one_of(st.lists(scores, min_size=n, max_size=n), scores.map(lambda v: [v] * n)),  # constant preds
        st.one_of(st.lists(scores, min_size=n, max_size=n), scores.map(lambda v: [v] * n)),  # tied targets
    )
)


@pytest.mark.parametrize("name", list_losses())
@settings(max_examples=30, deadline=None)
@given(batch=batches, train=st.booleans())
def test_every_loss_is_finite_with_finite_gradients_on_tiny_and_degenerate_batches(name, batch, train):
    torch.manual_seed(0)
    pred_values, target_values = batch
    loss = build(name).train(train)
    pred = torch.tensor(pred_values, requires_grad=True)
    target = torch.tensor(target_values)
    value = call(loss, pred, target)
    value.backward()
    assert value.dim() == 0 and torch.isfinite(value)
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


@SETTINGS
@given(
    level=st.floats(0.0, 1.0),
    spread=st.sampled_from([0.0, 1e-12, 1e-9, 1e-7, 1e-5, 1e-4]),
    size=st.integers(2, 16),
    data=st.data(),
    name=st.sampled_from(["plcc", "plcc_nin", "corr"]),
)
def test_correlation_losses_stay_bounded_for_constant_and_near_constant_predictions(level, spread, size, data,
                                                                                    name):
    """A constant prediction such as 0.3 (rounding residue ~1e-17 after centring) or a tiny spread
    gives a finite loss and a gradient of bounded norm, never the 1/residue blow-up."""
    target = torch.tensor(data.draw(st.lists(scores, min_size=size, max_size=size)), dtype=torch.float64)
    offsets = torch.tensor(data.draw(st.lists(st.floats(-1.0, 1.0), min_size=size, max_size=size)),
                           dtype=torch.float64)
    pred = (level + spread * offsets).requires_grad_(True)
    loss = create_loss(name)(pred, target)
    (grad,) = torch.autograd.grad(loss, pred)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert grad.norm().item() <= 2.5e3, grad.norm().item()
