"""Transform specs: what :func:`kdfiqa.data.build_transform` builds, as one typed, checked value.

A :class:`TransformSpec` is read from a preset name or a mapping (a recipe's YAML, a checkpoint's
deploy config) by :meth:`TransformSpec.parse`, which expands the preset, checks every field (sizes
through :class:`kdfiqa.size.Size`, the normalisation against :data:`NORMALIZATIONS`) and keeps what
was left out unset, so a spec may leave its ``size`` to the model it feeds. It owns the three things
done to a spec on its way to a transform: :meth:`~TransformSpec.completed` (the model's size and
normalisation filled in), :meth:`~TransformSpec.rescaled` (moved to another resolution) and
:meth:`~TransformSpec.for_evaluation` (a training spec's teacher view, flips and quality augmentation
left out). :attr:`~TransformSpec.alters_quality` says whether a spec alters images (its
``quality_augment``, :mod:`kdfiqa.data.quality_augment`), which only a teacher scoring the altered
view online may train on.

A spec is also a read-only mapping of its plain form (:meth:`~TransformSpec.to_dict`: sizes as
``[height, width]``, unset fields absent), so code and files that hold specs as dicts read it as one.

Importing this module costs no torch (a ``quality_augment`` field loads its module when parsed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Union

from ..errors import ConfigError
from ..size import Size

if TYPE_CHECKING:
    from .quality_augment import QualityAugment

__all__ = ["DEFAULT_NORMALIZE", "MODES", "NORMALIZATIONS", "PRESETS", "SPEC_KEYS", "TransformSpec",
           "TransformLike", "check_normalize"]

NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "symmetric": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
"""Input normalisations: per-channel (mean, std) on [0, 1] pixels. ``symmetric`` maps to (-1, 1) as
Conquerit does."""
DEFAULT_NORMALIZE = "imagenet"
"""The normalisation of a spec that names none."""

PRESETS: dict[str, dict[str, Any]] = {
    "2077agent_teacher_train": {"mode": "randcrop_or_resize", "size": 512, "flip": True},
    "2077agent_student_train": {"mode": "randcrop_or_resize", "size": 224, "crop": 512, "teacher_size": 512, "flip": True},
    "2077agent_test": {"mode": "resize", "size": 224},
    "conquerit_train": {"mode": "resize", "size": 224, "normalize": "symmetric"},
    "conquerit_test": {"mode": "center_crop", "size": 224, "resize": [240, 240], "normalize": "symmetric"},
    "bit_ssvgg_train": {"mode": "resize", "size": 224, "flip": True},
    "bit_ssvgg_test": {"mode": "resize", "size": [224, 336]},
    "ders_train": {"mode": "random_crop", "size": 224, "flip": True},
    "native_test": {"mode": "native"},
    "baseline_train": {"mode": "random_crop", "size": 224, "flip": True},
    "baseline_test": {"mode": "multi_crop", "size": 224, "num_crops": 20},
}
"""Named transform specs from the seed's methods, usable as ``{"preset": NAME, ...overrides}``."""

MODES = ("resize", "random_crop", "resize_random_crop", "randcrop_or_resize", "center_crop", "native", "multi_crop")
SPEC_KEYS = ("preset", "mode", "size", "crop", "resize", "teacher_size", "teacher_normalize", "flip", "normalize",
             "crop_prob", "num_crops", "quality_augment")
EVALUATION_DROPS = ("teacher_size", "teacher_normalize", "flip", "quality_augment")
"""Fields of a training spec an evaluation transform leaves out (the teacher's view, random flips, the
quality augmentation)."""


def check_normalize(name: Any, where: str = "normalize") -> str:
    """``name`` if it is a :data:`NORMALIZATIONS` name, else the one error that says so."""
    if not isinstance(name, str) or name not in NORMALIZATIONS:
        raise ConfigError(f"{where}: unknown {name!r}; choose one of {', '.join(NORMALIZATIONS)}")
    return name


def _size(value: Any, key: str) -> Size:
    return Size.parse(value, f"transform field {key!r}", rgb=True)


def _resize(value: Any) -> int | Size:
    if isinstance(value, int) and not isinstance(value, bool):
        return _size(value, "resize").height
    return _size(value, "resize")


@dataclass(frozen=True, eq=False)
class TransformSpec(Mapping):
    """One view transform, its fields typed and checked; ``None`` is a field left out.

    ``mode``: how the crop boxes are drawn (:data:`MODES`, see :mod:`kdfiqa.data.transforms`);
    ``size``: the student's view (unset: the model's, unused for ``native``); ``crop``: the crop box
    of the crop modes (unset: ``size``); ``resize``: the short side (an int) or the exact size the
    image is resized to before a crop; ``teacher_size``: the teacher's view of the same crop, or
    ``"native"``; ``teacher_normalize``: that view's normalisation; ``flip``: a random horizontal
    flip; ``normalize``: a :data:`NORMALIZATIONS` name; ``crop_prob``: ``randcrop_or_resize``'s
    probability of cropping; ``num_crops``: ``multi_crop``'s crop count; ``quality_augment``: the
    teacher-scored quality-altering augmentation of the decoded image
    (:class:`~kdfiqa.data.quality_augment.QualityAugment`, training only).
    """

    mode: str
    size: Size | None = None
    crop: Size | None = None
    resize: int | Size | None = None
    teacher_size: Size | str | None = None
    teacher_normalize: str | None = None
    flip: bool | None = None
    normalize: str | None = None
    crop_prob: float | None = None
    num_crops: int | None = None
    quality_augment: QualityAugment | None = None

    @classmethod
    def parse(cls, spec: TransformLike) -> "TransformSpec":
        """A preset name, a mapping of :data:`SPEC_KEYS` (``preset`` expanded, the mapping's own
        keys winning) or a spec, checked; a bad field is a :class:`~kdfiqa.errors.ConfigError`
        naming it."""
        if isinstance(spec, TransformSpec):
            return spec
        values = {"preset": spec} if isinstance(spec, str) else spec
        if not isinstance(values, Mapping):
            raise ConfigError(f"a transform spec is a preset name or a mapping of fields, got {type(values).__name__}")
        unknown = sorted(set(map(str, values)) - set(SPEC_KEYS))
        if unknown:
            raise ConfigError(f"transform field {unknown[0]!r} is unknown; valid fields: {', '.join(SPEC_KEYS)}")
        values = dict(values)
        if "preset" in values:
            name = values.pop("preset")
            if name not in PRESETS:
                raise ConfigError(f"transform preset {name!r} is unknown; choose one of {', '.join(PRESETS)}")
            values = {**PRESETS[name], **values}
        mode = values.get("mode")
        if mode not in MODES:
            raise ConfigError(f"transform field 'mode': {mode!r} is unknown; choose one of {', '.join(MODES)}")
        teacher = values.get("teacher_size")
        if "teacher_normalize" in values and teacher is None:
            raise ConfigError("transform field 'teacher_normalize' needs 'teacher_size' (the teacher's view)")
        crop_prob, num_crops = values.get("crop_prob"), values.get("num_crops")
        if crop_prob is not None and not (isinstance(crop_prob, (int, float)) and not isinstance(crop_prob, bool)
                                          and 0.0 <= crop_prob <= 1.0):
            raise ConfigError(f"transform field 'crop_prob': {crop_prob!r} is not a probability in [0, 1]")
        if num_crops is not None and not (isinstance(num_crops, int) and not isinstance(num_crops, bool)
                                          and num_crops >= 1):
            raise ConfigError(f"transform field 'num_crops': {num_crops!r} is not a positive int")
        flip = values.get("flip")
        if flip is not None and not isinstance(flip, bool):
            raise ConfigError(f"transform field 'flip': {flip!r} is not true or false")
        spec = cls(
            mode=mode,
            size=None if values.get("size") is None else _size(values["size"], "size"),
            crop=None if values.get("crop") is None else _size(values["crop"], "crop"),
            resize=None if values.get("resize") is None else _resize(values["resize"]),
            teacher_size=None if teacher is None else "native" if teacher == "native" else _size(teacher, "teacher_size"),
            teacher_normalize=(None if values.get("teacher_normalize") is None
                               else check_normalize(values["teacher_normalize"], "teacher_image normalize")),
            flip=flip,
            normalize=None if values.get("normalize") is None else check_normalize(values["normalize"]),
            crop_prob=None if crop_prob is None else float(crop_prob),
            num_crops=num_crops,
            quality_augment=_quality_augment(values.get("quality_augment")),
        )
        spec.check_resize()
        return spec

    @property
    def crop_box(self) -> Size | None:
        """The crop of a crop mode: ``crop``, else ``size`` (``None`` while both are unset)."""
        return self.crop or self.size

    @property
    def alters_quality(self) -> bool:
        """Whether the spec alters images before cutting its views (a ``quality_augment`` that can
        fire): such a spec is for a teacher that scores the altered views online, never for
        training on labels alone."""
        return self.quality_augment is not None and self.quality_augment.alters

    def check_resize(self) -> None:
        """Refuse a ``resize_random_crop`` whose short side could not hold its crop (its ``resize``
        is an int at least the crop's longer side)."""
        crop = self.crop_box
        if self.mode != "resize_random_crop" or crop is None:
            return
        resize = self.resize if self.resize is not None else crop.height
        if not isinstance(resize, int) or resize < max(crop.hw):
            shown = resize.as_list() if isinstance(resize, Size) else resize
            raise ConfigError(f"transform field 'resize': {shown!r} must be an int (the short side) >= the crop")

    def replace(self, **changes: Any) -> "TransformSpec":
        """A copy with ``changes`` (plain values, checked as :meth:`parse` checks them)."""
        return TransformSpec.parse({**self.to_dict(), **changes})

    def completed(self, size: Size | None = None, normalize: str | None = None) -> "TransformSpec":
        """The spec with what it leaves out filled in: ``size`` (unless ``native``) and ``normalize``
        (default :data:`DEFAULT_NORMALIZE`); its own values win."""
        spec = self
        if spec.size is None and size is not None and spec.mode != "native":
            spec = dataclasses.replace(spec, size=Size.parse(size))
        if spec.normalize is None:
            spec = dataclasses.replace(spec, normalize=check_normalize(normalize or DEFAULT_NORMALIZE))
        spec.check_resize()
        return spec

    def for_evaluation(self) -> "TransformSpec":
        """The spec without a training spec's teacher view and flips (:data:`EVALUATION_DROPS`)."""
        return dataclasses.replace(self, **{key: None for key in EVALUATION_DROPS})

    def rescaled(self, old: Size, new: Size) -> "TransformSpec":
        """The spec moved from the model resolution ``old`` to ``new``: the one rule for a changed
        resolution (``--input`` over a recipe, ``DeployConfig.replace(input_size=...)``).

        The view's ``size`` scales per side (a 224x336 test view of a 224 run becomes 112x168 at 112;
        a spec without a size keeps leaving it to the model). When the crop box is the view (no
        ``crop`` of its own), a ``resize`` before it scales with the view, never below the whole
        crop: an int (the short side) is at least the view's longer side, as ``resize_random_crop``
        requires, and a [height, width] at least the view per side; so Resize(240) + CenterCrop(224)
        becomes Resize(120) + CenterCrop(112) at 112, and Resize(168) + CenterCrop(112x168) at
        112x168. A spec with its own ``crop`` keeps its geometry (``crop`` and ``resize``), as the
        teacher's view (``teacher_size``) keeps its size. ``native`` specs are returned as they are.
        """
        if self.mode == "native":
            return self
        scale = (new.height / old.height, new.width / old.width)
        size = self.size
        if size is not None:
            size = _size([max(1, round(side * f)) for side, f in zip(size.hw, scale)], "size")
        resize = self.resize
        if resize is not None and self.crop is None:
            view = size or new
            if isinstance(resize, int):
                resize = _resize(max(max(view.hw), round(resize * scale[0])))
            else:
                resize = _resize([max(v, round(r * f)) for r, v, f in zip(resize.hw, view.hw, scale)])
        return dataclasses.replace(self, size=size, resize=resize)

    def to_dict(self) -> dict[str, Any]:
        """The plain form: set fields only, sizes as ``[height, width]``, ``resize`` an int or a
        pair (what YAML, JSON and checkpoints hold, and :meth:`parse` reads back)."""
        out: dict[str, Any] = {}
        for spec_field in dataclasses.fields(self):
            value = getattr(self, spec_field.name)
            if value is None:
                continue
            if isinstance(value, Size):
                value = value.as_list()
            elif spec_field.name == "quality_augment":
                value = value.to_dict()
            out[spec_field.name] = value
        return out

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TransformSpec):
            return self.to_dict() == other.to_dict()
        if isinstance(other, Mapping):
            return self.to_dict() == {str(k): _plain(v) for k, v in other.items()}
        return NotImplemented

    def __hash__(self) -> int:
        return hash(_hashable(self.to_dict()))

    def __repr__(self) -> str:
        return f"TransformSpec({self.to_dict()!r})"


def _quality_augment(value: Any) -> "QualityAugment | None":
    if value is None:
        return None
    from .quality_augment import QualityAugment

    return QualityAugment.parse(value)


def _hashable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple((k, _hashable(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


TransformLike = Union[str, Mapping[str, Any], TransformSpec]
"""What :meth:`TransformSpec.parse` reads: a preset name, a mapping of fields or a spec."""
