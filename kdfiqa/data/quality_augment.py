"""Teacher-scored quality-altering augmentation: degrade (and optionally mix) a decoded training image
before the student's and the teacher's views are cut from it.

A training transform spec's ``quality_augment`` field (:class:`QualityAugment`) asks for it, e.g.
``{"p": 0.5, "kinds": ["blur", "noise", "jpeg", "downup"], "max_severity": 0.6, "mixup": 0.0}``.
For each sample the data set draws an :class:`Augment` (:meth:`QualityAugment.draw`):

* with probability ``p`` one degradation of :mod:`kdfiqa.data.degradations`, its kind uniform over
  ``kinds``, its severity uniform in [0, ``max_severity``) and a seed for its noise, applied by
  :func:`~kdfiqa.data.degradations.degrade`;
* with probability ``mixup`` a mixup partner (Zhang et al., "mixup: Beyond Empirical Risk
  Minimization", ICLR 2018, eq. 1: x = lambda x_i + (1 - lambda) x_j). The pairing rule: the
  partner j is drawn uniformly from the data set's *other* samples, and lambda uniformly in
  [0.5, 1), so the sample's own image always keeps the larger share; the partner is resized
  (bilinear) to the sample's size and blended in 8 bits.

Mixup comes first, the degradation is applied to the blend. Both views are then cut from the
altered image, so they are altered alike (the same lambda, the same degradation). The teacher
scores the altered view online; the sample's label describes only the unaltered image, so an
altered sample's ``"score"`` is NaN for that view (:meth:`Augment.altered`).

Draws come from torch's generator (as the crop boxes of :mod:`kdfiqa.data.transforms` do), in a
fixed order: the degradation's coin, kind, severity and seed, then the mixup coin, partner and
lambda; a probability of 0 draws nothing, so ``p = 0`` and ``mixup = 0`` leave every later draw
(the crops) as without the augmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from PIL import Image

from ..errors import ConfigError, DataError
from .degradations import DEGRADATIONS, degrade

__all__ = ["QUALITY_AUGMENT_KEYS", "QualityAugment", "Augment"]

QUALITY_AUGMENT_KEYS = ("p", "kinds", "max_severity", "mixup")
DEFAULT_KINDS = ("blur", "noise", "jpeg", "downup")
"""The degradations drawn when ``kinds`` is left out (those of SSAR's pairs)."""
SEED_RANGE = 2**31
"""Degradation seeds are drawn from [0, SEED_RANGE)."""
MIXUP_LAMBDA_RANGE = (0.5, 1.0)
"""lambda, the sample's own share of a mixed image, is drawn uniformly from this range."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Augment:
    """What was applied to one sample's image: a degradation ``kind`` (``None``: none) at
    ``severity`` with ``seed``, and a mixup ``partner`` (an index of the data set, ``None``: none)
    with the sample's own share ``lam``."""

    kind: str | None = None
    severity: float = 0.0
    seed: int = 0
    partner: int | None = None
    lam: float = 1.0

    @property
    def altered(self) -> bool:
        """Whether the image differs from the decoded one (its label then does not describe it)."""
        return self.kind is not None or self.partner is not None

    def apply(self, img: Image.Image, partner: Image.Image | None = None) -> Image.Image:
        """``img`` mixed with ``partner`` (the image of :attr:`partner`, resized to ``img``'s size),
        then degraded; ``img`` itself when nothing was drawn."""
        if self.partner is not None:
            if partner is None:
                raise DataError(f"this augmentation mixes in image {self.partner}, but no partner image was given")
            partner = partner.convert("RGB")
            if partner.size != img.size:
                partner = partner.resize(img.size, Image.Resampling.BILINEAR)
            img = Image.blend(partner, img.convert("RGB"), self.lam)  # lam * img + (1 - lam) * partner
        if self.kind is not None:
            img = degrade(img, self.kind, self.severity, seed=self.seed)
        return img

    def as_item(self) -> dict[str, Any]:
        """The item's ``"augment"`` entry, collatable: ``kind`` ``""`` and ``partner`` -1 for none."""
        return {"kind": self.kind or "", "severity": float(self.severity), "seed": int(self.seed),
                "partner": -1 if self.partner is None else int(self.partner), "lam": float(self.lam)}


@dataclass(frozen=True)
class QualityAugment:
    """A transform spec's ``quality_augment``: the probability ``p`` of a degradation, its ``kinds``
    (:data:`~kdfiqa.data.degradations.DEGRADATIONS` names), the largest severity ``max_severity`` in
    (0, 1], and the probability ``mixup`` of mixing in another image (see the module docstring)."""

    p: float = 0.5
    kinds: tuple[str, ...] = DEFAULT_KINDS
    max_severity: float = 1.0
    mixup: float = 0.0

    @classmethod
    def parse(cls, value: Any, where: str = "transform field 'quality_augment'") -> "QualityAugment":
        """A mapping of :data:`QUALITY_AUGMENT_KEYS` (left out: the defaults) checked field by field;
        a bad one is a :class:`~kdfiqa.errors.ConfigError` naming it (``quality_augment.p``...)."""
        if isinstance(value, QualityAugment):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {value!r} is not a mapping of {', '.join(QUALITY_AUGMENT_KEYS)}")
        field = where[:-1] + ".{}'" if where.endswith("'") else where + ".{}"
        unknown = sorted(set(map(str, value)) - set(QUALITY_AUGMENT_KEYS))
        if unknown:
            raise ConfigError(f"{field.format(unknown[0])} is unknown; valid keys: {', '.join(QUALITY_AUGMENT_KEYS)}")
        for key in ("p", "mixup"):
            if key in value and not (_number(value[key]) and 0.0 <= value[key] <= 1.0):
                raise ConfigError(f"{field.format(key)}: {value[key]!r} is not a probability in [0, 1]")
        severity = value.get("max_severity", cls.max_severity)
        if not (_number(severity) and 0.0 < severity <= 1.0):
            raise ConfigError(f"{field.format('max_severity')}: {severity!r} is not a severity in (0, 1]")
        kinds = value.get("kinds", DEFAULT_KINDS)
        if isinstance(kinds, str) or not isinstance(kinds, (list, tuple)) or not kinds:
            raise ConfigError(f"{field.format('kinds')}: {kinds!r} is not a non-empty list of degradations "
                              f"({', '.join(DEGRADATIONS)})")
        for kind in kinds:
            if not isinstance(kind, str) or kind not in DEGRADATIONS:
                raise ConfigError(f"{field.format('kinds')}: {kind!r} is not a degradation; choose from "
                                  f"{', '.join(DEGRADATIONS)}")
        return cls(p=float(value.get("p", cls.p)), kinds=tuple(kinds), max_severity=float(severity),
                   mixup=float(value.get("mixup", cls.mixup)))

    @property
    def alters(self) -> bool:
        """Whether any image can be altered (``p`` or ``mixup`` above 0)."""
        return self.p > 0.0 or self.mixup > 0.0

    def to_dict(self) -> dict[str, Any]:
        """The plain form (what YAML, JSON and checkpoints hold)."""
        return {"p": self.p, "kinds": list(self.kinds), "max_severity": self.max_severity, "mixup": self.mixup}

    def draw(self, index: int, count: int) -> Augment:
        """One draw for sample ``index`` of a data set of ``count`` samples (torch's generator, in
        the order the module docstring gives)."""
        kind, severity, seed = None, 0.0, 0
        if self.p > 0.0 and float(torch.rand(())) < self.p:
            kind = self.kinds[int(torch.randint(len(self.kinds), ()))]
            severity = float(torch.rand((), dtype=torch.float64)) * self.max_severity
            seed = int(torch.randint(SEED_RANGE, ()))
        partner, lam = None, 1.0
        if self.mixup > 0.0 and float(torch.rand(())) < self.mixup:
            if count < 2:
                raise DataError("quality_augment.mixup needs a data set of at least two images to pair")
            partner = (index + 1 + int(torch.randint(count - 1, ()))) % count  # uniform over the others
            low, high = MIXUP_LAMBDA_RANGE
            lam = low + (high - low) * float(torch.rand((), dtype=torch.float64))
        return Augment(kind, severity, seed, partner, lam)
