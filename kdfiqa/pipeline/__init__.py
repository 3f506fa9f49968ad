"""The stages of kdfiqa's main job, shared by the command line, the Python API and the demo.

============================  =============================  ==================================
stage                         takes                          returns
============================  =============================  ==================================
:func:`train`                 a :class:`RunConfig`           :class:`RunResult` (a checkpoint)
:func:`pseudo_label`          a :class:`Teacher`, a folder   :class:`Labels` (CSV + image root)
:func:`distill`               a config, a teacher, labels    :class:`RunResult` (the student)
============================  =============================  ==================================

``kdfiqa train`` is :func:`train`; ``kdfiqa pseudo-label`` is :func:`pseudo_label`; ``kdfiqa distill``
is :func:`run_distill`, which builds the teacher once from ``distill.teachers``, checks the student's
budget, runs ECNU-SJTU's self-training rounds and the teacher's labelling of ``data.unlabeled`` when
asked, and then :func:`distill`; ``kdfiqa demo`` (:mod:`kdfiqa.demo`) calls the same stages. A stage
takes explicit inputs and returns explicit outputs: no stage writes a value into a config that the
next one reads back, and a pseudo-label CSV a user gives is used as given.

Every stage validates its whole configuration (values, files, the validation split's size) before
it builds a model; the distributed context is made once (:func:`kdfiqa.engine.init_distributed`)
and passed down. A trained model's deployment config (:mod:`kdfiqa.models.deploy`) records the
evaluation transform it was validated with, so ``evaluate``/``predict``/``export`` of its checkpoint
feed it the same way.

The stages live by concern: :mod:`~kdfiqa.pipeline.checks` (what is refused before a model is built),
:mod:`~kdfiqa.pipeline.building` (model, student, teacher, transforms), :mod:`~kdfiqa.pipeline.data`
(training and validation sets), :mod:`~kdfiqa.pipeline.training`, :mod:`~kdfiqa.pipeline.labelling` and
:mod:`~kdfiqa.pipeline.distillation` (the stages), and :mod:`~kdfiqa.pipeline.results` (what they pass on).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    ".building": ("build_model", "build_student", "build_teacher", "deploy_sizes", "resolve_transforms"),
    ".checks": ("validate",),
    ".data": ("labeled_data",),
    ".distillation": ("distill", "run_distill"),
    ".labelling": ("SelfTrained", "pseudo_label", "self_train"),
    ".results": ("Labels", "RunResult"),
    ".training": ("train",),
}
"""Where each public name lives: ``{sub-module: names}``, imported on first use (as :mod:`kdfiqa.engine`),
so that the command line's refusals (:mod:`~kdfiqa.pipeline.checks`) answer before torch is imported."""

__getattr__, __dir__, _NAMES = lazy_exports(__name__, globals(), _EXPORTS)

__all__ = [*_NAMES]
