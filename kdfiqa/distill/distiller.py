"""The distillation objective: a frozen teacher guides a budget-checked student.

A :class:`Distiller` splits into its frozen part, :meth:`Distiller.frozen_forward` (the teacher's
logits and tapped features, without autograd), and its trainable part, :class:`StudentLoss`
(``Distiller.trainable``: the student, the projectors and the loss modules), as the objective
protocol describes (:mod:`kdfiqa.distill.objective`); a trainer wraps only the latter in DDP.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..losses import WeightedSum
from ..metrics import Logistic4
from .features import FeaturePair, FeatureTap, build_feature_loss, capturing, parse_feature_pairs
from ..models.deploy import deploy_config, output_kind
from ..modes import evaluating
from .score_table import score_to_logit
from .objective import LossSpec, as_weighted_sum, label_mask, logged, masked_task_loss, targets_of
from .student import Student
from .teacher import Teacher, TeacherSource

__all__ = ["Distiller", "StudentLoss", "TeacherOutput", "loss_shares", "calibrated_logits"]


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def scores_and_logits(raw: Tensor, linear: bool) -> tuple[Tensor, Tensor]:
    """(scores, logits) of a student's ``forward_logits`` output: a sigmoid model's scores are
    σ(raw) and its logits ``raw``; a linear-output model's scores are ``raw`` itself (a regression
    onto the label scale, as the ECNU-SJTU student) and its logits the clamped logit of them
    (:func:`~kdfiqa.distill.score_table.score_to_logit`), so logit-space distillation losses compare
    like with like."""
    if linear:
        return raw, score_to_logit(raw)
    return raw.sigmoid(), raw


def loss_shares(weighted: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Each weighted term's share of the loss, ``|w·L| / Σ_j |w_j·L_j|`` (``weighted`` maps a term
    name to its weighted value ``w·L``), keyed ``share/<name>``: the shares sum to 1, so a term that
    vanishes beside the others shows as a share near 0 (all zero when every term is)."""
    magnitudes = {name: value.detach().abs().reshape(()) for name, value in weighted.items()}
    if not magnitudes:
        return {}
    total = torch.stack(list(magnitudes.values())).sum()
    total = torch.where(total > 0, total, torch.ones_like(total))
    return {f"share/{name}": m / total for name, m in magnitudes.items()}


def calibrated_logits(logits: Tensor, calibration: Logistic4) -> Tensor:
    """The teacher's logits ``z_t`` put on the label scale: ``logit(f(σ(z_t)))`` with ``f`` the
    4-parameter logistic (VQEG practice, the calibration of pseudo-labels,
    :func:`kdfiqa.metrics.fit_logistic4`) fitted from the teacher's scores to the labels, the score
    clamped by :func:`~kdfiqa.distill.score_table.score_to_logit` so it stays finite."""
    scores = calibration(logits.detach().double().sigmoid().cpu().numpy())
    return score_to_logit(torch.as_tensor(scores, device=logits.device).to(logits.dtype))


class TeacherOutput(NamedTuple):
    """What the frozen teacher gives the trainable side for one batch, without autograd history:
    its ``logits`` (shape (B,)) and the tapped ``features``, one per feature pair in order."""

    logits: Tensor
    features: list[Tensor]


class StudentLoss(nn.Module):
    """The trainable side of a :class:`Distiller`: the student, its projectors and loss modules.

    ``forward(batch, teacher)`` runs the student on ``batch["image"]`` and returns the loss dict of
    :class:`Distiller` against the :class:`TeacherOutput` ``teacher``. ``feature_losses`` hold one
    loss module (with its projector) per pair of ``feature_pairs``, and ``taps`` the hooks on the
    student's modules named by those pairs.
    """

    def __init__(
        self,
        model: nn.Module,
        task_loss: WeightedSum | None,
        distill_loss: WeightedSum | None,
        feature_pairs: Sequence[FeaturePair],
        feature_losses: Sequence[nn.Module],
        taps: Sequence[FeatureTap],
        *,
        task_weight: float,
        distill_weight: float,
    ) -> None:
        super().__init__()
        self.model = model
        self.linear = output_kind(model) == "linear"
        self.task_loss = task_loss
        self.distill_loss = distill_loss
        self.feature_pairs = list(feature_pairs)
        self.feature_losses = nn.ModuleList(feature_losses)
        self.taps = list(taps)
        self.task_weight = float(task_weight)
        self.distill_weight = float(distill_weight)

    def forward(self, batch: Mapping[str, Any], teacher: TeacherOutput) -> dict[str, Tensor]:
        with capturing(self.taps):
            raw = self.model.forward_logits(batch["image"]).reshape(-1)
            student_features = [tap.take() for tap in self.taps]
        scores, student_logits = scores_and_logits(raw, self.linear)
        teacher_logits = teacher.logits.to(student_logits.dtype)
        total: Tensor = student_logits.new_zeros(())
        terms: dict[str, Tensor] = {}
        weighted: dict[str, Tensor] = {}
        if self.task_loss is not None:
            targets = targets_of(batch, scores, remedy="build the Distiller with task_loss=None")
            value, parts = masked_task_loss(self.task_loss, scores, targets, label_mask(batch))
            weighted["task"] = self.task_weight * value
            total = total + weighted["task"]
            terms.update({"task": value, **{f"task/{k}": v for k, v in parts.items()}})
        if self.distill_loss is not None:
            value, parts = self.distill_loss(
                scores, teacher_logits.sigmoid(), student_logits=student_logits, teacher_logits=teacher_logits
            )
            weighted["distill"] = self.distill_weight * value
            total = total + weighted["distill"]
            terms.update({"distill": value, **{f"distill/{k}": v for k, v in parts.items()}})
        features = zip(self.feature_pairs, self.feature_losses, student_features, teacher.features)
        for pair, loss, student_feat, teacher_feat in features:
            value = loss(student_feat, teacher_feat)
            weighted[f"feature/{pair.name}"] = pair.weight * value
            total = total + weighted[f"feature/{pair.name}"]
            terms[f"feature/{pair.name}"] = value
        terms.update(loss_shares(weighted))
        return logged(total, terms)

    def extra_repr(self) -> str:
        parts = [f"task_weight={self.task_weight}", f"distill_weight={self.distill_weight}"]
        if self.task_loss is not None:
            parts.append(f"task: {self.task_loss}")
        if self.distill_loss is not None:
            parts.append(f"distill: {self.distill_loss}")
        return ", ".join(parts)


class Distiller(nn.Module):
    """Objective for training a student under a teacher (see :mod:`kdfiqa.distill.objective`).

    ``forward(batch)`` returns ``{"loss": total, ...terms}`` with

    ``total = task_weight · task(σ(z_s), MOS) + distill_weight · distill(σ(z_s), σ(z_t); z_s, z_t)
    + Σ_k w_k · feature_k(f_s^k, f_t^k)``

    where ``z_s = student.forward_logits(batch["image"])``, ``z_t = teacher(batch)`` and σ is the
    sigmoid. ``task_loss`` and ``distill_loss`` are loss specs (a name, a formula such as
    ``"1.0*hybrid + 0.5*temperature_mse"``, a loss module or a ``WeightedSum``); either may be
    ``None``. In ``distill_loss``, ``distill`` terms see the logits and ``task`` terms compare the
    student's scores with the teacher's (e.g. ``"plcc"`` against the teacher). The task loss sees
    the labeled samples of a batch only (:func:`~kdfiqa.distill.objective.label_mask`: a NaN
    ``"score"`` marks an unlabeled one; a batch without one gives a zero task term); distillation
    and feature losses see every sample. A batch without ``"score"`` at all (a data set of
    unlabelled images) needs ``task_loss=None``. Every output also holds each weighted term's share
    of the loss (:func:`loss_shares`: ``share/task``, ``share/distill``, ``share/feature/<name>``).

    ``teacher_calibration`` (a :class:`~kdfiqa.metrics.Logistic4`, fitted from the teacher's scores
    of labeled images to their labels) puts the teacher's outputs on the label scale before any
    loss sees them: ``z_t`` becomes ``logit(f(σ(z_t)))`` (:func:`calibrated_logits`), the mapping
    calibrated pseudo-labels get.

    ``feature_losses`` lists ``(student_module, teacher_module[, loss[, weight]])`` (or maps a term
    name to one): forward hooks on those module paths of the **unwrapped** student and of the teacher
    network capture their outputs. Each loss (default ``"feature"``) owns its projector, sized at
    construction by one probe forward in eval mode; projectors live in ``trainable``, never in the
    student.

    ``teacher`` is a :class:`Teacher` or anything :class:`Teacher` accepts; ``student`` a
    :class:`Student` or a model (then checked against the default budget). A batch without a
    ``teacher_image`` feeds the teacher the student's image, converted from the student's deploy
    normalisation to the teacher's (:meth:`Teacher.set_input_normalize`). ``.model`` is the bare
    student, the only module a trainer saves; the teacher is frozen, so ``.train()`` leaves it in
    eval mode and its parameters never require grad. ``forward(batch)`` is
    ``trainable(batch, frozen_forward(batch))``.
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
        teacher_calibration: Logistic4 | None = None,
    ) -> None:
        super().__init__()
        self.teacher_calibration = teacher_calibration
        self.teacher = teacher if isinstance(teacher, Teacher) else Teacher(teacher)
        self.student = student if isinstance(student, Student) else Student(student)
        # a batch without a teacher view feeds the teacher the student's image, normalised as the
        # student is deployed (a pipeline that knows its data better says so after this)
        self.teacher.set_input_normalize(image=deploy_config(self.student.model).normalize)
        pairs = parse_feature_pairs(feature_losses)
        if task_loss is None and distill_loss is None and not pairs:
            raise ConfigError("the distiller has no loss: give a task_loss, a distill_loss or feature_losses")
        model = self.student.model
        student_taps = [FeatureTap(model, p.student, "student") for p in pairs]
        self._teacher_taps = [FeatureTap(self.teacher.network, p.teacher, "teacher") for p in pairs]
        self.trainable = StudentLoss(
            model,
            as_weighted_sum(task_loss) if task_loss is not None else None,
            as_weighted_sum(distill_loss) if distill_loss is not None else None,
            pairs,
            self._build_feature_losses(model, pairs, student_taps),
            student_taps,
            task_weight=task_weight,
            distill_weight=distill_weight,
        )

    @property
    def model(self) -> nn.Module:
        """The bare student network: what is trained and saved."""
        return self.trainable.model

    def _build_feature_losses(self, model: nn.Module, pairs: list[FeaturePair],
                              student_taps: list[FeatureTap]) -> list[nn.Module]:
        if not pairs:
            return []
        student_size = self.student.input_sizes[0]
        teacher_size = self.teacher.input_size or student_size
        network = self.teacher.network
        with evaluating(model), evaluating(network), capturing(student_taps + self._teacher_taps):
            model.forward_logits(torch.zeros(1, *student_size, device=_device_of(model)))
            network.forward_logits(torch.zeros(1, *teacher_size, device=_device_of(network)))
            examples = [(s.take(), t.take()) for s, t in zip(student_taps, self._teacher_taps)]
        return [build_feature_loss(p.loss, s, t) for p, (s, t) in zip(pairs, examples)]

    def frozen_forward(self, batch: Mapping[str, Any]) -> TeacherOutput:
        """The teacher's logits (calibrated when the Distiller has a ``teacher_calibration``) and
        tapped features for ``batch``, computed without autograd."""
        with capturing(self._teacher_taps):
            logits = self.teacher(batch).reshape(-1)
            if self.teacher_calibration is not None:
                logits = calibrated_logits(logits, self.teacher_calibration)
            features = [tap.take() for tap in self._teacher_taps]
        return TeacherOutput(logits, features)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        # The frozen teacher runs first: its temporaries are freed before the student's forward
        # starts keeping activations for backward, so the two never hold memory at once (on CPU,
        # the other order re-faults fresh pages for every teacher temporary, about 10% of a step).
        return self.trainable(batch, self.frozen_forward(batch))
