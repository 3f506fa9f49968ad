"""Keep a student inside the challenge budget in CI: a pytest file to copy into your own project.

Run it with ``pytest examples/test_student_budget.py``. It fails, naming the five costliest modules,
the moment a change to the student pushes it over 0.5 GFLOPs (fvcore, eval mode, batch 1) or 5 M
parameters at any resolution it will be deployed at.

Point it at your own student with environment variables:

* ``KDFIQA_STUDENT``: a registered name (default ``emo2_1m``), ``timm:NAME`` or a kdfiqa checkpoint;
* ``KDFIQA_SIZES``: comma-separated deployment sizes (default ``224,224x336``).
"""

from __future__ import annotations

import os

import pytest

from kdfiqa.budget import VQUALA2025, Budget, BudgetExceeded, check, measure
from kdfiqa.models import create_model
from kdfiqa.testing import assert_fits

STUDENT = os.environ.get("KDFIQA_STUDENT", "emo2_1m")
SIZES = os.environ.get("KDFIQA_SIZES", "224,224x336").split(",")


def build_student():
    if STUDENT.endswith((".pt", ".pth")):
        from kdfiqa import load_model

        return load_model(STUDENT)
    return create_model(STUDENT, pretrained=False)


@pytest.fixture(scope="module")
def student():
    return build_student()


@pytest.fixture(scope="module")
def report(student):
    """The student's cost at its first deployment size, measured once for the checks below."""
    return measure(student, SIZES[0])


@pytest.mark.parametrize("size", SIZES)
def test_student_fits_the_challenge_budget(student, size):
    # One line: fails with measured vs allowed figures and the costliest modules.
    (report,) = assert_fits(student, "vquala2025", sizes=[size])
    print(f"{STUDENT} at {size}: {report.gflops:.4f} GFLOPs, {report.params:,} params")


def test_no_parameter_is_dead_weight(report):
    # Parameters that forward never uses (e.g. a distillation projector left inside the student) still
    # count towards the limit: keep them out of the deployed model.
    assert report.unused_params == []


def test_the_check_really_bites(student, report):
    # A budget a little below the student's own cost must be refused, or the tests above prove nothing.
    tighter = Budget(max_gflops=report.gflops * 0.99, max_params=VQUALA2025.max_params, name="tighter")
    with pytest.raises(BudgetExceeded):
        check(student, tighter, SIZES[0])
