"""Building a run's parts from its config: the model, the student (budget-checked at its deployment
sizes), the teacher, the resolved transforms and the distributed context."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..budget import Budget
from ..budget.presets import NO_BUDGET
from ..config import RunConfig
from ..engine.distributed import DistContext, init_distributed, is_main_process
from ..errors import ConfigError, spelled
from ..size import Size, format_size
from .checks import required

__all__ = ["build_model", "build_student", "build_teacher", "checked_student", "resolve_transforms", "deploy_sizes",
           "run_budget", "run_context"]

log = logging.getLogger("kdfiqa.pipeline")


def run_context(config: RunConfig, ctx: DistContext | None) -> DistContext:
    return ctx if ctx is not None else init_distributed(config.train.device)


def build_model(config: RunConfig) -> nn.Module:
    """``config.model`` built through the registry with initial weights fixed by ``train.seed``
    (the same command and seed give the same weights), started from ``model.init`` when given (a
    kdfiqa checkpoint or a model folder)."""
    from ..checkpoint import load_weights
    from ..models import create_model
    from ..models.model_folder import is_model_folder, load_folder_weights

    section = config.model
    kwargs = dict(section.kwargs)
    if section.pretrained:
        kwargs["pretrained"] = True
    if section.head is not None:
        kwargs["head"] = dict(section.head)
    torch.manual_seed(config.train.seed)
    model = create_model(required(section.name, spelled("--model NAME (model.name)", "model.name")), **kwargs)
    if section.init:
        fresh = _head_state(model) if section.init_head == "fresh" else None
        (load_folder_weights if is_model_folder(section.init) else load_weights)(model, section.init)
        if fresh is not None:  # the checkpoint's backbone under the head this seed initialises
            model.head.load_state_dict(fresh)
    return model


def _head_state(model: nn.Module) -> dict[str, Tensor]:
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise ConfigError(f"model.init_head=fresh: {type(model).__name__} has no .head module to start afresh; "
                          "use a kdfiqa FIQA model or model.init_head=keep")
    return {key: value.clone() for key, value in head.state_dict().items()}


def resolve_transforms(config: RunConfig, model: nn.Module, teacher_size: Sequence[int] | None = None,
                       teacher_normalize: str | None = None) -> RunConfig:
    """A copy of ``config`` with ``model.input`` and both transform specs filled in.

    ``model.input`` defaults to the model's deployment size; a transform without ``size`` gets it;
    the training transform defaults to resize + flip and the evaluation one to a resize, both with
    the training transform's normalisation. ``teacher_size`` adds the teacher's view of the same
    crop to the training transform (unless it names one already), normalised as the teacher was
    trained, ``teacher_normalize``; a teacher of unknown size whose normalisation differs from the
    student's gets its view at the student's size.
    """
    from ..models.deploy import deploy_config

    size = Size.parse(config.model.input or deploy_config(model).input_size, "model.input").as_list()
    train_spec = dict(config.data.train_transform or {"mode": "resize", "flip": True})
    normalize = train_spec.get("normalize", deploy_config(model).normalize)
    train_spec.setdefault("normalize", normalize)
    evaluation = dict(config.data.eval_transform or {"mode": "resize"})
    evaluation.setdefault("normalize", normalize)
    for spec in (train_spec, evaluation):
        if spec.get("mode") != "native" and "preset" not in spec:
            spec.setdefault("size", size)
    if teacher_size is None and teacher_normalize not in (None, normalize):
        teacher_size = size
    if teacher_size is not None:
        train_spec.setdefault("teacher_size", Size.parse(teacher_size, "teacher input size").as_list())
    if teacher_normalize is not None and "teacher_size" in train_spec:
        train_spec.setdefault("teacher_normalize", teacher_normalize)
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, input=size),
        data=dataclasses.replace(config.data, train_transform=train_spec, eval_transform=evaluation),
    )


def run_budget(config: RunConfig, command: str = "distill") -> Budget:
    """The budget a run checks: ``distill.budget``, which for ``distill`` defaults to the default
    budget and for ``train`` to none."""
    from ..budget.presets import DEFAULT_BUDGET, as_budget

    return as_budget(config.distill.budget or (DEFAULT_BUDGET if command == "distill" else "none"))


def deploy_sizes(config: RunConfig, budget: Budget) -> list[tuple[int, int, int]]:
    """Where the student's budget is checked: at each size it runs at (``distill.deploy_input``, else
    the training input) or the budget's deployment size where that is larger
    (:meth:`~kdfiqa.budget.Budget.sizes_for`: ``vquala2025`` always checks 224x224), plus the
    size the evaluation transform feeds the network (the checkpoint's deployment size) unless one of
    those covers it in height and width."""
    from ..data.transform_spec import TransformSpec

    train_size = Size.parse(config.model.input, "model.input").chw
    given = [Size.parse(s, "distill.deploy_input").chw for s in config.distill.deploy_input] or [train_size]
    sizes = list(dict.fromkeys(s for size in given for s in budget.sizes_for(size)))
    # the evaluation transform's view, presets expanded: the size the checkpoint deploys at
    spec = TransformSpec.parse(config.data.eval_transform) if config.data.eval_transform else None
    if spec is not None and spec.mode != "native" and spec.size is not None:
        evaluation = spec.size.chw
        if not any(s[1] >= evaluation[1] and s[2] >= evaluation[2] for s in sizes):
            sizes.append(evaluation)
    return list(dict.fromkeys(sizes))


def build_student(config: RunConfig, model: nn.Module | None = None, command: str = "distill") -> Any:
    """The student of ``config``, budget-checked at :func:`deploy_sizes` before any training step
    (over budget: :class:`~kdfiqa.budget.BudgetExceeded`, unless ``distill.allow_over_budget``)."""
    from ..distill import Student

    model = model if model is not None else build_model(config)
    config = resolve_transforms(config, model)
    budget = run_budget(config, command)
    student = Student(model, budget=budget, input_sizes=deploy_sizes(config, budget),
                      allow_over_budget=config.distill.allow_over_budget)
    if student.within_budget and budget is not NO_BUDGET and is_main_process():
        costs = "; ".join(f"{format_size(r.input_size)}: {r.gflops:.4f} GFLOPs, {r.params:,} params"
                          for r in student.reports)
        log.info("budget: %s fits %s at its deployment size (%s)", config.model.name, budget.describe(), costs)
    return student


def checked_student(config: RunConfig, student: Any) -> Any:
    """The student of a run, checked at the run's own deployment sizes and budget
    (:func:`build_student`), whether built here or given (a :class:`~kdfiqa.distill.Student`, checked
    where it was built, or a bare model); a given Student's ``allow_over_budget`` is kept."""
    from ..distill import Student

    if student is None:
        return build_student(config)
    if isinstance(student, Student) and student.allow_over_budget and not config.distill.allow_over_budget:
        config = dataclasses.replace(config, distill=dataclasses.replace(config.distill, allow_over_budget=True))
    return build_student(config, model=student.model if isinstance(student, Student) else student)


def build_teacher(config: RunConfig, ctx: DistContext | None = None,
                  sources: Sequence[str] | None = None) -> Any:
    """The frozen teacher of ``distill.teachers`` (or ``sources``), built once, on ``ctx``'s device."""
    from ..distill import Teacher

    teachers = list(sources if sources is not None else config.distill.teachers)
    if not teachers:
        return None
    return Teacher(teachers, input_size=config.distill.teacher_input, device=run_context(config, ctx).device)
