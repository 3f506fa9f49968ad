"""Architecture search under a budget: sample a family of students, keep those that fit, list the Pareto front.

A family (:class:`SearchSpace`, named in :data:`SPACES`) is one registered model whose factory keyword
arguments vary over a few choices: for EMO and EMOv2 the per-stage depths, widths (``embed_dims``) and
expansion ratios and the attention window; for the MobileNets and LightHSPA their width multiplier.
:func:`search_students` draws ``trials`` candidates from it with a seeded sampler (the same seed and trial count
give the same candidates), measures each at the deployment size with :func:`kdfiqa.budget.measure`,
discards those over the budget (counted), times the others on the CPU (batch 1, median of a few
runs), and returns the Pareto front among them.

The front's objectives: the parameter count is **maximised**, as the capacity proxy (within a budget
a student learns more with more parameters, and fvcore's FLOPs, not parameters, is what the budget
binds first), while GFLOPs and measured CPU latency are **minimised**. A candidate is on the front
when no other is at least as good in every objective and better in one; without latency (``latency_runs=0``)
the front is over parameters and GFLOPs alone, and is then a function of the seed and trial count.

Parameters do not depend on the input size, so a candidate over the parameter limit is discarded
before fvcore traces it. :func:`write_front` writes each front configuration as a model file
(:mod:`kdfiqa.models.model_file`) that ``kdfiqa train``/``distill --model FILE`` and ``kdfiqa budget
FILE`` take.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError, spelled
from ..models import create_model
from ..models.mobilenet import WIDTHS
from ..models.model_file import write_model_file
from ..size import format_size
from .core import measure
from .limits import Budget, parse_input_size

__all__ = ["MAX_TRIALS", "MAX_LATENCY_RUNS",
           "SearchSpace", "SPACES", "Candidate", "SearchResult", "sample", "pareto_front", "cpu_latency_ms",
           "search_students", "front_files", "check_out_dir", "write_front"]


MAX_TRIALS = 1000
"""The most candidates one search draws (each is built and measured: about a second apiece)."""
MAX_LATENCY_RUNS = 100
"""The most timed CPU passes per candidate."""


@dataclass(frozen=True)
class SearchSpace:
    """A family of students: ``create_model(model, **fixed, **drawn)``.

    ``choices`` maps a factory keyword argument to its values, or, for a per-stage argument, to one
    tuple of values per stage (each stage drawn on its own); ``fixed`` arguments are in every candidate.
    """

    family: str
    model: str
    choices: Mapping[str, tuple]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


_EMO_STAGES = {
    "depths": ((1, 2, 3), (1, 2, 3, 4), (4, 6, 8, 10, 12), (2, 3, 4, 5)),
    "embed_dims": ((24, 32, 40, 48), (32, 48, 64, 72), (60, 80, 100, 120, 160), (160, 180, 200, 240, 280, 320)),
    "exp_ratios": ((2.0, 2.5, 3.0), (2.0, 2.5, 3.0), (2.5, 3.0, 3.5, 4.0), (3.0, 3.5, 4.0)),
    "window_size": (4, 7, 8),
}
"""Per-stage choices around the 1M presets; the widths of the attention stages (3 and 4) are multiples
of 20, their head width, and ``20 * exp_ratio`` is whole, so every draw builds."""

SPACES: dict[str, SearchSpace] = {space.family: space for space in (
    SearchSpace("emo2", "emo2_1m", _EMO_STAGES,
                description="EMOv2 (iiRMB): depths, widths, expansion ratios per stage, window size"),
    SearchSpace("emo", "emo_1m", _EMO_STAGES, fixed={"head_dims": [16, 16, 20, 20]},
                description="EMO (iRMB): depths, widths, expansion ratios per stage, window size"),
    SearchSpace("mobilenetv3_large", "mobilenetv3_large_fiqa", {"width": WIDTHS["mobilenetv3_large"]},
                description="MobileNetV3-Large (Conquerit): timm's width multipliers"),
    SearchSpace("mobilenetv3_small", "mobilenetv3_small_fiqa", {"width": WIDTHS["mobilenetv3_small"]},
                description="MobileNetV3-Small: timm's width multipliers"),
    SearchSpace("mobilenetv2", "mobilenetv2_fiqa", {"width": WIDTHS["mobilenetv2"]},
                description="MobileNetV2 (challenge baseline): timm's width multipliers"),
    SearchSpace("lighthspa", "lighthspa_fiqa", {"width_mult": (0.5, 0.75, 1.0, 1.25, 1.5), "num_heads": (2, 4, 8)},
                description="LightHSPA (DERS): width multiplier, LightHSPA heads"),
)}
"""The families :func:`search_students` explores, by name."""


@dataclass(frozen=True)
class Candidate:
    """One measured configuration: ``trial`` is its draw (1-based; 0 is the family's own preset)."""

    trial: int
    kwargs: dict
    params: int
    flops: int | None
    """fvcore FLOPs at the search's input size; ``None`` when over the parameter limit (never traced)."""
    within: bool
    latency_ms: float | None = None
    """Median CPU milliseconds of one batch-1 forward pass; ``None`` when not timed."""

    @property
    def gflops(self) -> float | None:
        return None if self.flops is None else self.flops / 1e9

    def as_dict(self) -> dict[str, Any]:
        return {"trial": self.trial, "kwargs": self.kwargs, "params": self.params, "gflops": self.gflops,
                "within": self.within, "latency_ms": self.latency_ms}


@dataclass
class SearchResult:
    """What :func:`search_students` found: every distinct candidate drawn, the front among those within budget,
    and the family's preset measured the same way (``reference``)."""

    space: SearchSpace
    budget: Budget
    input_size: tuple[int, int, int]
    seed: int
    trials: int
    candidates: list[Candidate]
    duplicates: int
    front: list[Candidate]
    reference: Candidate
    latency_runs: int
    seconds: float

    @property
    def over_budget(self) -> int:
        """Distinct candidates discarded for being over the budget."""
        return sum(not c.within for c in self.candidates)

    @property
    def within_budget(self) -> int:
        return sum(c.within for c in self.candidates)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (one JSON object)."""
        return {
            "family": self.space.family, "model": self.space.model,
            "budget": {"name": self.budget.name, "max_gflops": self.budget.max_gflops,
                       "max_params": self.budget.max_params},
            "input_size": list(self.input_size), "seed": self.seed, "trials": self.trials,
            "counts": {"drawn": self.trials, "duplicates": self.duplicates, "measured": len(self.candidates),
                       "over_budget": self.over_budget, "within_budget": self.within_budget,
                       "front": len(self.front)},
            "latency_runs": self.latency_runs, "seconds": self.seconds,
            "reference": {"name": self.space.model, **self.reference.as_dict()},
            "front": [c.as_dict() for c in self.front],
            "candidates": [c.as_dict() for c in self.candidates],
        }


def sample(space: SearchSpace, rng: random.Random) -> dict[str, Any]:
    """One draw of ``space``'s keyword arguments from ``rng`` (per-stage values as lists)."""
    drawn = {}
    for name, options in space.choices.items():
        if isinstance(options[0], tuple):
            drawn[name] = [rng.choice(stage) for stage in options]
        else:
            drawn[name] = rng.choice(options)
    return {**space.fixed, **drawn}


def _dominates(a: Candidate, b: Candidate, latency: bool) -> bool:
    """Whether ``a`` is at least as good as ``b`` in every objective and better in one."""
    better = [a.params - b.params, b.flops - a.flops]  # type: ignore[operator]
    if latency:
        better.append(b.latency_ms - a.latency_ms)  # type: ignore[operator]
    return all(d >= 0 for d in better) and any(d > 0 for d in better)


def pareto_front(candidates: Sequence[Candidate], *, latency: bool) -> list[Candidate]:
    """The within-budget candidates no other dominates (parameters up; GFLOPs, and latency when
    ``latency``, down), by parameters, then FLOPs, then trial."""
    pool = [c for c in candidates if c.within]
    front = [c for c in pool if not any(_dominates(o, c, latency) for o in pool)]
    return sorted(front, key=lambda c: (c.params, c.flops, c.trial))


def cpu_latency_ms(model: nn.Module, input_size: tuple[int, int, int], runs: int) -> float:
    """Median milliseconds of ``runs`` batch-1 forward passes of ``model`` (in eval mode, no
    gradient) on the CPU at ``input_size``, after one warm-up pass."""
    x = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0))
    model.eval()
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _evaluate(space: SearchSpace, trial: int, kwargs: dict[str, Any], budget: Budget,
              size: tuple[int, int, int], latency_runs: int) -> Candidate:
    try:
        model = create_model(space.model, **kwargs)
    except ConfigError as exc:  # a space whose choices do not all build is a bug of the space
        raise ConfigError(f"search family {space.family}: {exc}") from exc
    params = sum(p.numel() for p in model.parameters())
    if params > budget.max_params:
        return Candidate(trial, kwargs, params, None, False)
    # at the budget's deployment size too, where that is larger: a file written at 64 still fits at 224
    report = max((measure(model, s) for s in budget.sizes_for(size)), key=lambda r: r.flops)
    within = budget.fits(report)
    latency = cpu_latency_ms(model, size, latency_runs) if within and latency_runs > 0 else None
    return Candidate(trial, kwargs, report.params, report.flops, within, latency)


def search_students(family: str, budget: Budget, *, input_size: Any = None, trials: int = 32, seed: int = 0,
                    latency_runs: int = 5, progress: bool = False) -> SearchResult:
    """Draw ``trials`` candidates of :data:`SPACES` ``[family]`` (seeded by ``seed``), measure each at
    ``input_size`` (default: the budget's deployment size, else the family model's own) and at the
    budget's deployment size where that is larger (:meth:`~kdfiqa.budget.Budget.sizes_for`; the
    costlier figures are the candidate's), discard those over ``budget``, time the rest at
    ``input_size`` (``latency_runs`` runs; 0: no timing) and return the Pareto front.

    A draw equal to an earlier one is counted as a duplicate and not measured again. ``progress``
    shows a bar on stderr.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..console import make_console
    from ..models import model_info

    if family not in SPACES:
        raise ConfigError(f"{spelled('--family')} {family!r} is not one of {', '.join(SPACES)}")
    if not 1 <= trials <= MAX_TRIALS:
        raise ConfigError(f"{spelled('--trials')} must be from 1 to {MAX_TRIALS}, got {trials}")
    if not 0 <= latency_runs <= MAX_LATENCY_RUNS:
        raise ConfigError(f"{spelled('--latency-runs')} must be from 1 to {MAX_LATENCY_RUNS} (0 in Python: no timing), "
                          f"got {latency_runs}")
    space = SPACES[family]
    size = parse_input_size(input_size if input_size is not None
                            else budget.deploy_size or model_info(space.model).default_input_size)
    start = time.perf_counter()
    rng = random.Random(seed)
    seen: set[str] = set()
    candidates: list[Candidate] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("within {task.fields[within]}, over {task.fields[over]}"), TimeElapsedColumn())
    with Progress(*columns, console=make_console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task(f"searching {family}", total=trials + 1, within=0, over=0)
        reference = _evaluate(space, 0, {}, budget, size, latency_runs)
        bar.advance(task)
        for trial in range(1, trials + 1):
            kwargs = sample(space, rng)
            key = json.dumps(kwargs, sort_keys=True)
            if key not in seen:
                seen.add(key)
                candidates.append(_evaluate(space, trial, kwargs, budget, size, latency_runs))
            within = sum(c.within for c in candidates)
            bar.update(task, advance=1, within=within, over=len(candidates) - within)
    return SearchResult(space, budget, size, seed, trials, candidates, trials - len(candidates),
                        pareto_front(candidates, latency=latency_runs > 0), reference, latency_runs,
                        time.perf_counter() - start)


def front_files(out_dir: str | Path, family: str) -> list[Path]:
    """The model files a search of ``family`` wrote to ``out_dir`` before (``FAMILY_search_NN.yaml``)."""
    return sorted(Path(out_dir).glob(f"{family}_search_*.yaml"))


def check_out_dir(out_dir: str | Path, family: str, *, overwrite: bool = False) -> list[Path]:
    """The earlier front files of ``family`` in ``out_dir``, which :func:`write_front` replaces;
    refused unless ``overwrite`` (and, always, a folder that cannot be written:
    :func:`kdfiqa.outputs.check_output_dir`, which every command's output folder passes)."""
    from ..outputs import check_output_dir

    out = check_output_dir(out_dir, resume=True, files=())  # holds model files, never a run
    old = front_files(out, family)
    if old and not overwrite:
        raise ConfigError(f"{spelled('--out', 'out_dir')} {out}: holds {old[0].name} from an earlier search; add "
                          f"{spelled('--overwrite', 'overwrite=True')} "
                          "to replace those files, or choose another folder")
    return old


def write_front(result: SearchResult, out_dir: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write each front configuration as ``out_dir/FAMILY_search_NN.yaml`` (NN from 01, in front
    order): its registered name, keyword arguments and the search's input size, headed by a comment
    with its measured cost. Files of an earlier search of the family are replaced only when
    ``overwrite`` (:func:`check_out_dir`; those beyond this front's are removed once it is written);
    otherwise a file another process writes meanwhile is refused, never replaced
    (:class:`~kdfiqa.atomic_write.OutputExistsError`). Each file is written atomically."""
    out = Path(out_dir)
    old = check_out_dir(out, result.space.family, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    size = format_size(result.input_size)
    for k, candidate in enumerate(result.front, 1):
        latency = "" if candidate.latency_ms is None else f", {candidate.latency_ms:.1f} ms on the CPU"
        comment = (f"kdfiqa search: family {result.space.family}, seed {result.seed}, trial {candidate.trial} "
                   f"of {result.trials}\n{candidate.params:,} params, {candidate.gflops:.4f} GFLOPs at {size}"
                   f"{latency} ({result.budget.describe()})")
        paths.append(write_model_file(out / f"{result.space.family}_search_{k:02d}.yaml", result.space.model,
                                      candidate.kwargs, result.input_size[1:], comment=comment, overwrite=overwrite))
    for path in set(old) - set(paths):
        path.unlink()
    return paths
