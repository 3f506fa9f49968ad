"""The budget gate (kdfiqa.distill.Student): measured before training, refused when over budget."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from distill_tiny_models import TinyFIQA
from kdfiqa.budget import Budget, BudgetExceeded
from kdfiqa.distill import Distiller, Student
from kdfiqa.errors import ConfigError


class WideHead(TinyFIQA):
    """TinyFIQA plus a 6,002,000-parameter layer: over the 5 M parameter limit of vquala2025."""

    def __init__(self) -> None:
        super().__init__()
        self.big = nn.Linear(8, 6000)
        self.out = nn.Linear(6000, 1000)  # 6000*1000 + 1000 = 6,001,000 parameters

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        h = self.forward_features(x).mean(dim=(2, 3))
        return self.head(h) + self.out(self.big(h)).mean(dim=1, keepdim=True)


def test_a_student_is_checked_at_the_budgets_deployment_size_when_it_runs_smaller():
    """A bare model that runs at 16x16 is held to vquala2025 at 224x224 (a registered name works
    as the budget); against a budget without a deployment size, at its own 16x16."""
    model = TinyFIQA()
    student = Student(model, budget="vquala2025")
    assert student.model is model and student.within_budget
    assert student.input_sizes == [(3, 224, 224)] and student.budget.name == "vquala2025"
    distiller = Distiller(TinyFIQA(), model)
    assert distiller.student.input_sizes == [(3, 224, 224)]


def test_student_within_budget_reports_its_cost_at_its_default_resolution():
    model = TinyFIQA()
    student = Student(model, budget=Budget(max_gflops=0.5, max_params=5_000_000, name="anywhere"))
    assert student.model is model and student.within_budget
    assert student.input_sizes == [(3, 16, 16)]
    [report] = student.reports
    assert report.params == sum(p.numel() for p in model.parameters())
    # conv1: 16*16 positions * 4 out * 27 MACs; conv2: 8*8 * 8 * 36; head: 8 MACs (fvcore ignores biases)
    conv_and_linear = 16 * 16 * 4 * 27 + 8 * 8 * 8 * 36 + 8
    bn = 2 * (16 * 16 * 4) + 2 * (8 * 8 * 8)  # fvcore charges batch norm in eval 2 FLOPs per element
    assert report.flops == conv_and_linear + bn


def test_student_measures_every_inference_resolution():
    student = Student(TinyFIQA(), input_sizes=[16, (32, 48)])
    small, large = student.reports
    assert large.input_size == (3, 32, 48)
    assert large.flops > small.flops


def test_over_budget_student_is_refused_before_any_training_step():
    model = WideHead()
    with pytest.raises(BudgetExceeded, match="params"):
        Student(model)
    with pytest.raises(BudgetExceeded):
        Distiller(TinyFIQA(), model)
    with pytest.raises(BudgetExceeded, match="GFLOPs"):
        Student(TinyFIQA(), budget=Budget(max_gflops=1e-6, max_params=10**9, name="tiny"))
    assert all(p.grad is None for p in model.parameters())


def test_allow_over_budget_trains_anyway_with_a_loud_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="kdfiqa.distill.student"):
        student = Student(WideHead(), allow_over_budget=True)
    assert not student.within_budget
    assert student.reports[0].params > 5_000_000
    assert "ALLOW_OVER_BUDGET" in caplog.text and "exceeds budget" in caplog.text


def test_student_without_a_resolution_is_a_config_error():
    model = TinyFIQA()
    del model.default_input_size
    with pytest.raises(ConfigError, match="input_sizes"):
        Student(model)
    assert Student(model, input_sizes=16).input_sizes == [(3, 16, 16)]


@pytest.mark.parametrize("budget", [None, "none"])
def test_a_student_can_be_held_to_no_budget(budget):
    student = Student(WideHead(), budget=budget)  # over vquala2025's parameter limit
    assert student.within_budget and student.budget.name == "none"
