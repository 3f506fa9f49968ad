"""The teacher: a frozen FIQA network, a table of precomputed scores, or an ensemble of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.transforms import renormalize
from ..errors import ConfigError, spelled
from ..models.deploy import attached_deploy_config, output_kind
from ..size import Size
from ..targets import load_target, resolve_scheme
from .score_table import ScoreTable, score_to_logit

__all__ = ["TeacherSource", "NetworkTeacher", "Teacher"]

TeacherSource = Union[nn.Module, str, os.PathLike]
"""What a teacher can be made of: a FIQA model, any target :func:`kdfiqa.targets.load_target`
resolves (a registered model name, ``SCHEME:REST`` such as ``timm:NAME`` or a plugin's scheme,
``file.py:factory``, a kdfiqa checkpoint), or a CSV of precomputed scores."""

SCORES_SUFFIXES = (".csv",)
SINGLE_VIEW_MODES = ("resize", "center_crop")
"""Evaluation transforms a teacher labels images with as they are: one view of a fixed size."""


class NetworkTeacher(nn.Module):
    """One teacher network and the resolution it runs at.

    The resolution is ``input_size``, else the input size of the deploy config the network carries
    (:class:`~kdfiqa.models.deploy.DeployConfig`: a registry model's default, a checkpoint's trained
    size), else its ``default_input_size``, else unknown (``None``).

    ``forward(batch)`` feeds ``batch["teacher_image"]`` when the batch has it (the data set rendered
    the teacher's own view of the same crop), otherwise ``batch["image"]`` (the student's view),
    bilinearly resized with antialiasing to ``input_size`` when one is known and the view is of
    another size (an ensemble's members share one view). The teacher view is taken to be normalised
    as ``view_normalize`` says and the student's image as ``image_normalize`` (both default to the
    network's own ``normalize``, its deploy config's; :meth:`Teacher.set_input_normalize` sets
    them), and either is converted to the network's own normalisation when they differ. It returns
    ``network.forward_logits`` as (B, 1) on the batch's device; for a linear-output network (a regression onto the label scale) the clamped logit of that score, so
    that every teacher speaks in logits.
    """

    def __init__(self, network: nn.Module, input_size: Any = None) -> None:
        super().__init__()
        if not callable(getattr(network, "forward_logits", None)):
            raise ConfigError(
                f"teacher {type(network).__name__} has no forward_logits(x); wrap it in "
                "kdfiqa.models.heads.FIQARegressor or give it one returning pre-sigmoid scores (B, 1)"
            )
        self.network = network
        self.linear = output_kind(network) == "linear"
        deployed = attached_deploy_config(network)
        size = (input_size if input_size is not None
                else deployed.input_size if deployed is not None
                else getattr(network, "default_input_size", None))
        self.input_size = Size.parse(size, "teacher input_size").chw if size is not None else None
        # the normalisation the network was trained with, and those of the teacher view and of the
        # student's image it may be fed (see Teacher.set_input_normalize)
        self.normalize = deployed.normalize if deployed is not None else "imagenet"
        self.view_normalize = self.image_normalize = self.normalize

    @property
    def eval_transform(self) -> dict[str, Any]:
        """The transform spec the network is deployed with (its deploy config's evaluation transform,
        e.g. a trained teacher's Resize + CenterCrop, at :attr:`input_size`) when that is one view of
        a fixed size; else a resize to :attr:`input_size` with the deploy config's normalisation."""
        deployed = attached_deploy_config(self.network)
        normalize = self.normalize
        if self.input_size is None:
            raise ConfigError("the teacher's resolution is unknown: pass "
                              f"{spelled('--teacher-input (distill.teacher_input)', 'distill.teacher_input')}")
        if deployed is not None:
            if deployed.input_size != self.input_size:
                deployed = deployed.replace(input_size=self.input_size)
            spec = dict(deployed.eval_transform)
            if spec.get("mode") in SINGLE_VIEW_MODES:
                return spec
        return {"mode": "resize", "size": list(self.input_size[1:]), "normalize": normalize}

    def _raw(self, batch: Mapping[str, Any]) -> Tensor:
        image = batch["image"]
        x = batch.get("teacher_image")
        x = (renormalize(image, self.image_normalize, self.normalize) if x is None
             else renormalize(x, self.view_normalize, self.normalize))
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size[1:]:  # e.g. an ensemble's
            x = F.interpolate(x, size=self.input_size[1:], mode="bilinear", align_corners=False, antialias=True)
        device = next(self.network.parameters(), image).device
        return self.network.forward_logits(x.to(device)).reshape(-1, 1).to(image.device)

    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        raw = self._raw(batch)
        return score_to_logit(raw) if self.linear else raw  # a linear-output network regresses scores

    def scores(self, batch: Mapping[str, Any]) -> Tensor:
        """The network's scores on its own scale: σ of its logits, or a linear-output network's
        raw regression (never clamped)."""
        raw = self._raw(batch)
        return raw if self.linear else raw.sigmoid()


def _member(source: TeacherSource, input_size: Any, model_kwargs: Mapping[str, Any]) -> nn.Module:
    from .view_cache import CachedTeacher

    if isinstance(source, CachedTeacher):
        return source
    if isinstance(source, nn.Module):
        return NetworkTeacher(source, input_size)
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"teacher {source!r}: expected a model, a model name, a checkpoint or a scores CSV")
    if Path(source).suffix.lower() in SCORES_SUFFIXES:
        return ScoreTable(Path(source))
    resolved = resolve_scheme(source, **model_kwargs)
    if resolved is not None and not callable(getattr(resolved, "forward_logits", None)):
        return resolved  # a scheme's score source: forward(batch) -> logits
    return NetworkTeacher(load_target(source, **model_kwargs) if resolved is None else resolved, input_size)


class Teacher(nn.Module):
    """A frozen teacher: ``teacher(batch) -> logits (B, 1)``, never trained.

    ``source`` is one :data:`TeacherSource` or a list of them (and of other :class:`Teacher`\\ s, which
    keep their own resolutions): a list is an ensemble whose members' scores (sigmoid of their
    logits) are averaged in **score space**, the mean returned as a clamped logit
    (:func:`~kdfiqa.distill.score_table.score_to_logit`). Averaging scores keeps every member's vote
    on the label scale, where an offline CSV and a network agree.

    * Networks run at their own resolution: ``input_size``, else their deploy config's (see
      :class:`NetworkTeacher` for the fallbacks and for which view is fed).
    * A CSV teacher looks scores up by ``batch["name"]`` (:class:`ScoreTable`); a
      :class:`~kdfiqa.distill.view_cache.CachedTeacher` reads the logits a crop-level cache stored
      for each batch's views.
    * Frozen for its whole life: built in eval mode with ``requires_grad=False``; :meth:`train` keeps
      eval mode (so batch-norm statistics never move, even inside a training objective) and
      ``forward`` runs without autograd.

    Sources other than models and CSVs are resolved by :func:`kdfiqa.targets.load_target`; a
    ``SCHEME:REST`` source's resolver (:data:`kdfiqa.targets.TEACHER_SCHEMES`: ``timm:NAME`` and
    plugins' schemes) may return a network or a score source (a module whose ``forward(batch)``
    returns logits, used as it is). ``model_kwargs`` go to :func:`kdfiqa.models.create_model` for
    registered names and to a scheme's resolver (e.g. ``{"pretrained": True}``); ``device`` moves
    the networks there (outputs come back on the batch's device).
    """

    def __init__(
        self,
        source: TeacherSource | Sequence[TeacherSource | "Teacher"],
        *,
        input_size: Any = None,
        device: str | torch.device | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        sources = list(source) if isinstance(source, (list, tuple)) else [source]
        if not sources:
            raise ConfigError("teacher: an empty list of teachers was given; name at least one")
        members: list[nn.Module] = []
        for item in sources:
            if isinstance(item, Teacher):
                members.extend(item.members)
            else:
                members.append(_member(item, input_size, model_kwargs or {}))
        self.members = nn.ModuleList(members)
        # the files the teacher was loaded from (checkpoints, score CSVs), which nothing may overwrite
        files: list[str] = []
        for item in sources:
            if isinstance(item, Teacher):
                files.extend(item.sources)
            elif isinstance(item, (str, os.PathLike)) and Path(item).exists():
                files.append(os.fspath(item))
        self.sources = tuple(files)
        if self.normalize is not None:  # one teacher view for all: the first network's normalisation
            self.set_input_normalize(teacher_image=self.normalize)
        self.requires_grad_(False)
        super().train(False)
        if device is not None:
            self.to(device)

    def train(self, mode: bool = True) -> "Teacher":
        """Keep eval mode whatever ``mode`` is: a teacher is never trained."""
        return super().train(False)

    @property
    def network(self) -> nn.Module:
        """The teacher network, for feature hooks; only a single-network teacher has one."""
        if len(self.members) != 1 or not isinstance(self.members[0], NetworkTeacher):
            kinds = ", ".join(type(m).__name__ for m in self.members)
            raise ConfigError(
                f"feature distillation needs one teacher network, but this teacher is {kinds}; "
                "use a single model or checkpoint teacher"
            )
        return self.members[0].network

    @property
    def input_size(self) -> tuple[int, int, int] | None:
        """The resolution of a single-network teacher (``None`` when unknown)."""
        return self.members[0].input_size if isinstance(self.members[0], NetworkTeacher) else None

    @property
    def normalize(self) -> str | None:
        """The normalisation the teacher's view (``teacher_image``) is best rendered in: its first
        network's own (members that differ convert it), ``None`` for a teacher without a network."""
        first = next((m for m in self.members if isinstance(m, NetworkTeacher)), None)
        return None if first is None else first.normalize

    def set_input_normalize(self, *, teacher_image: str | None = None, image: str | None = None) -> None:
        """Say how the images this teacher will be fed are normalised (:data:`~kdfiqa.data.transforms.NORMALIZATIONS`
        names): ``teacher_image``, the teacher's own view, and ``image``, the student's view it falls
        back to (the :class:`~kdfiqa.distill.Distiller` sets it to the student's); each network
        converts them to its own. ``None`` leaves one as it is."""
        for member in self.members:
            if isinstance(member, NetworkTeacher):
                if teacher_image is not None:
                    member.view_normalize = teacher_image
                if image is not None:
                    member.image_normalize = image

    @property
    def eval_transform(self) -> dict[str, Any]:
        """The transform spec the teacher labels images with: a single network's own
        (:attr:`NetworkTeacher.eval_transform`); for an ensemble, a resize to its first network's
        resolution (each member then resizes to its own)."""
        first = self.members[0]
        if not isinstance(first, NetworkTeacher) or first.input_size is None:
            raise ConfigError("pseudo-labelling needs a teacher network (a model name or checkpoint), "
                              f"not only a CSV of scores; or pass {spelled('--teacher-input', 'teacher_input')}")
        spec = first.eval_transform
        if len(self.members) == 1:
            return spec
        return {"mode": "resize", "size": list(first.input_size[1:]), "normalize": spec["normalize"]}

    @torch.no_grad()
    def scores(self, batch: Mapping[str, Any]) -> Tensor:
        """Scores (B, 1) on the label scale the teacher speaks: a single network's own
        (:meth:`NetworkTeacher.scores`: a linear-output regression stays unclamped), else the mean of
        the members' σ(logit) scores, as :meth:`forward` averages them."""
        if len(self.members) == 1 and isinstance(self.members[0], NetworkTeacher):
            return self.members[0].scores(batch)
        return self(batch).sigmoid()

    @torch.no_grad()
    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        logits = [member(batch) for member in self.members]
        if len(logits) == 1:
            return logits[0]
        return score_to_logit(torch.stack([z.sigmoid() for z in logits]).mean(dim=0))
