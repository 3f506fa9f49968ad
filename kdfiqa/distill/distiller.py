"""The distillation objective: a frozen teacher guides a budget-checked student."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .features import FeaturePair, FeatureTap, build_feature_loss, capturing, parse_feature_pairs
from .objective import LossSpec, as_weighted_sum, logged, targets_of
from .student import Student
from .teacher import Teacher, TeacherSource

__all__ = ["Distiller"]


@contextlib.contextmanager
def _probing(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for a probe forward, every module's mode restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes:
            module.training = mode


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


class Distiller(nn.Module):
    """Objective for training a student under a teacher (see :mod:`kdfiqa.distill.objective`).

    ``forward(batch)`` returns ``{"loss": total, ...terms}`` with

    ``total = task_weight · task(σ(z_s), MOS) + distill_weight · distill(σ(z_s), σ(z_t); z_s, z_t)
    + Σ_k w_k · feature_k(f_s^k, f_t^k)``

    where ``z_s = student.forward_logits(batch["image"])``, ``z_t = teacher(batch)`` and σ is the
    sigmoid. ``task_loss`` and ``distill_loss`` are loss specs (a name, a formula such as
    ``"1.0*hybrid + 0.5*temperature_mse"``, a loss module or a ``WeightedSum``); either may be
    ``None``. In ``distill_loss``, ``distill`` terms see the logits and ``task`` terms compare the
    student's scores with the teacher's (e.g. ``"plcc"`` against the teacher). A batch without
    ``"score"`` (unlabelled images) needs ``task_loss=None``.

    ``feature_losses`` lists ``(student_module, teacher_module[, loss[, weight]])`` (or maps a term
    name to one): forward hooks on those module paths of the **unwrapped** student and of the teacher
    network capture their outputs. Each loss (default ``"feature"``) owns its projector, sized at
    construction by one probe forward in eval mode; projectors live here, never in the student.

    ``teacher`` is a :class:`Teacher` or anything :class:`Teacher` accepts; ``student`` a
    :class:`Student` or a model (then checked against the default budget). ``.model`` is the bare
    student, the only module a trainer saves; the teacher is frozen, so ``.train()`` leaves it in
    eval mode and its parameters never require grad.
    """

    def __init__(
        self,
        teacher: Teacher | TeacherSource | Sequence[TeacherSource],
        student: Student | nn.Module,
        task_loss: LossSpec | None = "mse",
        distill_loss: LossSpec | None = "temperature_mse",
        feature_losses: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        task_weight: float = 1.0,
        distill_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.teacher = teacher if isinstance(teacher, Teacher) else Teacher(teacher)
        self.student = student if isinstance(student, Student) else Student(student)
        self.model = self.student.model
        self.task_loss = as_weighted_sum(task_loss) if task_loss is not None else None
        self.distill_loss = as_weighted_sum(distill_loss) if distill_loss is not None else None
        self.task_weight = float(task_weight)
        self.distill_weight = float(distill_weight)
        self.feature_pairs = parse_feature_pairs(feature_losses)
        if self.task_loss is None and self.distill_loss is None and not self.feature_pairs:
            raise ConfigError("the distiller has no loss: give a task_loss, a distill_loss or feature_losses")
        self._student_taps = [FeatureTap(self.model, p.student, "student") for p in self.feature_pairs]
        self._teacher_taps = (
            [FeatureTap(self.teacher.network, p.teacher, "teacher") for p in self.feature_pairs]
            if self.feature_pairs else []
        )
        self._taps = self._student_taps + self._teacher_taps
        self.feature_losses = nn.ModuleList(self._build_feature_losses(self.feature_pairs))

    def _build_feature_losses(self, pairs: list[FeaturePair]) -> list[nn.Module]:
        if not pairs:
            return []
        student_size = self.student.input_sizes[0]
        teacher_size = self.teacher.input_size or student_size
        network = self.teacher.network
        with _probing(self.model), _probing(network), capturing(self._taps):
            self.model.forward_logits(torch.zeros(1, *student_size, device=_device_of(self.model)))
            network.forward_logits(torch.zeros(1, *teacher_size, device=_device_of(network)))
            examples = [(s.take(), t.take()) for s, t in zip(self._student_taps, self._teacher_taps)]
        return [build_feature_loss(p.loss, s, t) for p, (s, t) in zip(pairs, examples)]

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        with capturing(self._taps):
            # The frozen teacher runs first: its temporaries are freed before the student's forward
            # starts keeping activations for backward, so the two never hold memory at once (on CPU,
            # the other order re-faults fresh pages for every teacher temporary, about 10% of a step).
            teacher_logits = self.teacher(batch).reshape(-1)
            student_logits = self.model.forward_logits(batch["image"]).reshape(-1)
            teacher_logits = teacher_logits.to(student_logits.dtype)
            features = [(s.take(), t.take()) for s, t in zip(self._student_taps, self._teacher_taps)]
        scores = student_logits.sigmoid()
        total: Tensor = student_logits.new_zeros(())
        terms: dict[str, Tensor] = {}
        if self.task_loss is not None:
            targets = targets_of(batch, scores, remedy="build the Distiller with task_loss=None")
            value, parts = self.task_loss(scores, targets)
            total = total + self.task_weight * value
            terms.update({"task": value, **{f"task/{k}": v for k, v in parts.items()}})
        if self.distill_loss is not None:
            value, parts = self.distill_loss(
                scores, teacher_logits.sigmoid(), student_logits=student_logits, teacher_logits=teacher_logits
            )
            total = total + self.distill_weight * value
            terms.update({"distill": value, **{f"distill/{k}": v for k, v in parts.items()}})
        for pair, loss, (student_feat, teacher_feat) in zip(self.feature_pairs, self.feature_losses, features):
            value = loss(student_feat, teacher_feat)
            total = total + pair.weight * value
            terms[f"feature/{pair.name}"] = value
        return logged(total, terms)

    def extra_repr(self) -> str:
        parts = [f"task_weight={self.task_weight}", f"distill_weight={self.distill_weight}"]
        if self.task_loss is not None:
            parts.append(f"task: {self.task_loss}")
        if self.distill_loss is not None:
            parts.append(f"distill: {self.distill_loss}")
        return ", ".join(parts)
