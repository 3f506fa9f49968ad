"""What a budget is and what a measurement reports: :class:`Budget` (with the challenge's
:data:`VQUALA2025`), :class:`CostReport`, the verdict errors and the input-size parser.

Importing this module costs no torch: command-line parsers and configs use it freely.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import ConfigError, KdfiqaError, spelled
from ..size import MAX_SIDE, Size, SizeLike, format_size

__all__ = ["Budget", "VQUALA2025", "CostReport", "BudgetExceeded", "MeasurementError", "InputSize",
           "MAX_SIDE", "parse_input_size"]

InputSize = SizeLike
"""An input size :func:`parse_input_size` reads."""


@dataclass(frozen=True)
class Budget:
    """An upper bound on compute (GFLOPs, fvcore convention) and on the parameter count."""

    max_gflops: float
    max_params: int
    name: str = "custom"
    deploy_size: tuple[int, int, int] | None = None
    """The (C, H, W) a student of this budget is deployed at, where training checks it by default
    (the challenge's 224x224); ``None``: the model's own size."""

    def __post_init__(self) -> None:
        gflops, params = self.max_gflops, self.max_params
        if isinstance(gflops, bool) or not isinstance(gflops, (int, float)) or math.isnan(gflops) or gflops <= 0:
            raise ConfigError(f"budget {self.name}: {spelled('--max-gflops', 'max_gflops')} {gflops!r} must be a number > 0")
        if isinstance(params, bool) or not isinstance(params, numbers.Integral) or params <= 0:
            raise ConfigError(f"budget {self.name}: {spelled('--max-params', 'max_params')} {params!r} must be an integer > 0")

    def fits(self, report: "CostReport") -> bool:
        """Whether ``report`` is within both limits (limits are inclusive)."""
        return report.gflops <= self.max_gflops and report.params <= self.max_params

    def sizes_for(self, size: Sequence[int]) -> list[tuple[int, int, int]]:
        """Where a model that runs at ``size`` (C, H, W) is checked against this budget: the budget's
        deployment size, or ``size`` where that is larger (both when neither covers the other), so
        that training a student small never dodges the deployment check."""
        own = tuple(int(d) for d in size)
        deploy = self.deploy_size
        if deploy is None or (own[1] >= deploy[1] and own[2] >= deploy[2]):
            return [own]  # type: ignore[list-item]
        if deploy[1] >= own[1] and deploy[2] >= own[2]:
            return [tuple(deploy)]  # type: ignore[list-item]
        return [own, tuple(deploy)]  # type: ignore[list-item]

    def describe(self) -> str:
        return f"{self.name} (<= {self.max_gflops:g} GFLOPs, <= {self.max_params:,} params)"


VQUALA2025 = Budget(max_gflops=0.5, max_params=5_000_000, name="vquala2025", deploy_size=(3, 224, 224))
"""The VQualA 2025 FIQA challenge's limits: 0.5 GFLOPs (fvcore) and 5 M parameters."""


@dataclass
class CostReport:
    """What :func:`measure` found for one model at one input size."""

    flops: int
    params: int
    input_size: tuple[int, int, int]
    batch_size: int = 1
    by_module: dict[str, int] = field(default_factory=dict)
    """FLOPs spent in each module's own code, its sub-modules excluded (they sum to ``flops``)."""
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    """Operators fvcore met but does not count (activations, adds, pooling ...), with occurrences."""
    unused_params: list[str] = field(default_factory=list)
    """Parameters forward never uses: they count towards ``params`` without doing any work."""

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def costliest(self, k: int = 5) -> list[tuple[str, int]]:
        """The ``k`` modules with the most FLOPs of their own, costliest first."""
        ranked = sorted(self.by_module.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(name or "(model)", n) for name, n in ranked[:k] if n > 0]

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_size": list(self.input_size),
            "flops": self.flops,
            "gflops": self.gflops,
            "params": self.params,
        }


class BudgetExceeded(KdfiqaError):
    """A model is over its budget at some resolution; the message says where the cost goes."""

    def __init__(self, budget: Budget, report: CostReport, model_name: str = "model") -> None:
        self.budget = budget
        self.report = report
        over = []
        if report.gflops > budget.max_gflops:
            shown = f"{report.gflops:.4f} GFLOPs"
            if round(report.gflops, 4) <= budget.max_gflops:  # just over: rounding would hide by how much
                shown = f"{report.gflops:.9f} GFLOPs ({report.flops:,} FLOPs)"
            over.append(f"{shown} > {budget.max_gflops:g} allowed")
        if report.params > budget.max_params:
            over.append(f"{report.params:,} params > {budget.max_params:,} allowed")
        where = format_size(report.input_size, channels=True)
        lines = [f"{model_name} exceeds budget {budget.name} at {where}: " + "; ".join(over)]
        lines.append("costliest modules: " + ", ".join(
            f"{name} {n / 1e9:.4f} GFLOPs" for name, n in report.costliest(5)))
        if report.unused_params:
            lines.append(f"{len(report.unused_params)} parameter tensors are never used by forward "
                         f"(e.g. {report.unused_params[0]}): they still count")
        super().__init__("\n".join(lines))


class MeasurementError(KdfiqaError):
    """fvcore could not measure the model, so no verdict can be given."""


def parse_input_size(size: InputSize, where: str = "input size") -> tuple[int, int, int]:
    """``size`` (``224``, ``(224, 336)``, ``(3, 224, 336)``, ``"224x336"`` ...) as ``(C, H, W)``:
    :meth:`kdfiqa.size.Size.parse` (sides of 1 to :data:`MAX_SIDE`), its one error included."""
    return Size.parse(size, where).chw
