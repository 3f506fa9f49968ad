"""Distillation: a frozen teacher, a budget-checked student and the objectives that train them.

* :class:`Teacher`: a frozen network, checkpoint, registered model, or CSV of scores (or an ensemble);
* :class:`Student`: the model to train, refused before training when over its compute budget;
* :class:`Distiller`: task + distillation + feature losses of a student under a teacher, split into
  the frozen teacher pass (:class:`TeacherOutput`) and the trainable side (:class:`StudentLoss`),
  the only part the Trainer optimises and wraps in DDP;
* :class:`Supervised`: plain training on labels; :class:`SSARObjective`: label-free SSAR pretraining
  on :class:`SSARPairs`;
* :func:`pseudo_label`: offline distillation, a teacher's (optionally calibrated) scores as a CSV;
* :func:`build_view_cache`: the teacher's scores on K stored crops of every image (FKD), trained on
  through :class:`CachedViews` and :class:`CachedTeacher` without running the teacher.

Every objective has ``.model`` (what is trained and saved) and ``forward(batch) -> {"loss", ...}``.
"""

from __future__ import annotations

from .distiller import Distiller, StudentLoss, TeacherOutput
from .features import FeaturePair
from .objective import LossSpec, Supervised, as_weighted_sum
from .pseudo_label import TeacherScores, pseudo_label, score_with_teacher, write_scores_csv
from .score_table import ScoreTable, score_to_logit
from .ssar import SSARObjective, SSARPairs
from .student import Student, unwrap_model
from .teacher import NetworkTeacher, Teacher, TeacherSource
from .view_cache import CachedTeacher, CachedViews, ViewCache, build_view_cache

__all__ = [
    "Teacher",
    "ViewCache",
    "CachedViews",
    "CachedTeacher",
    "build_view_cache",
    "Student",
    "Distiller",
    "StudentLoss",
    "TeacherOutput",
    "Supervised",
    "SSARObjective",
    "SSARPairs",
    "pseudo_label",
    "score_with_teacher",
    "write_scores_csv",
    "TeacherScores",
    "FeaturePair",
    "NetworkTeacher",
    "ScoreTable",
    "TeacherSource",
    "LossSpec",
    "as_weighted_sum",
    "score_to_logit",
    "unwrap_model",
]
