"""The model card (``README.md``) of a model folder (:mod:`kdfiqa.models.model_folder`).

:func:`model_card` turns a folder's ``config.json`` values and the run configuration the model was
trained with (a kdfiqa checkpoint's ``"config"``, when known) into Markdown with the Hub's metadata
header (licence, library, tags): architecture, parameters and GFLOPs at the deployment size, the
budget verdict, the teacher and recipe it was distilled with, validation and test metrics, a note on
the training data, how to use it, and the licence. Local paths of the run appear by file name only.
"""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any, Mapping

from ..size import format_size

__all__ = ["model_card", "DEFAULT_DATA_NOTE", "TAGS"]

TAGS = ("face-image-quality-assessment", "image-quality-assessment", "knowledge-distillation", "kdfiqa")
"""The Hub tags of every card."""

DEFAULT_DATA_NOTE = (
    "The model was trained on the labeled images named under Training. Their licences and consent terms, "
    "not only this model's licence, govern what the model may be used for: check them before deploying it. "
    "Quality scores reflect the label distribution of that data and may not transfer to other cameras, "
    "demographics or capture conditions without validation.")
"""What a card says about the data unless told otherwise."""

METRIC_ORDER = ("score", "srcc", "plcc", "krcc", "rmse", "fitted_score", "fitted_plcc")
"""The metric columns first shown, in this order (others follow, sorted)."""


def _name(path: Any) -> str:
    """A run path as its file name (local folders stay private)."""
    return PurePath(str(path)).name or str(path)


def _code(value: Any) -> str:
    return f"`{json.dumps(value, sort_keys=True) if not isinstance(value, str) else value}`"


def _table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows)]


def _model_rows(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    deploy = values["deploy"]
    c, h, w = deploy["input_size"]
    rows = [("Architecture", _code(deploy["name"])),
            ("Factory arguments", _code(deploy["kwargs"]) if deploy["kwargs"] else "defaults")]
    for cost in values.get("cost") or []:
        size = format_size(cost["input_size"], channels=True)
        rows.append(("Parameters", f"{cost['params']:,} ({cost['params'] / 1e6:.3g} M)"))
        rows.append((f"GFLOPs at {size} (fvcore)", f"{cost['gflops']:.4f}"))
    rows = list(dict.fromkeys(rows))  # one parameter row for several sizes
    budget = values.get("budget")
    if budget:
        verdict = "**fits**" if budget["fits"] else "**over budget**"
        rows.append(("Budget", f"{budget['name']} (<= {budget['max_gflops']} GFLOPs, <= {budget['max_params']:,} "
                               f"params): {verdict}"))
    else:
        rows.append(("Budget", "not checked"))
    rows += [("Input", f"{c}x{h}x{w} RGB, normalisation `{deploy['normalize']}`"),
             ("Evaluation transform", _code(deploy["eval_transform"])),
             ("Output", "a quality score in (0, 1) (sigmoid)" if deploy["output"] == "sigmoid"
              else "the regressed quality score (linear output)")]
    return rows


def _training_rows(run: Mapping[str, Any]) -> list[tuple[str, str]]:
    def section(key: str) -> Mapping[str, Any]:
        found = run.get(key)
        return found if isinstance(found, Mapping) else {}

    data, distill, train, loss = section("data"), section("distill"), section("train"), section("loss")
    teachers = [_code(_name(t) if PurePath(str(t)).suffix else t) for t in distill.get("teachers") or []]
    rows = []
    if teachers:
        rows.append(("Teacher" + ("s" if len(teachers) > 1 else ""), ", ".join(teachers)))
        if distill.get("loss"):
            rows.append(("Distillation loss", _code(distill["loss"])))
    elif data.get("pseudo_csv"):
        rows.append(("Teacher", f"pseudo-labels {_code(_name(data['pseudo_csv']))}"))
    else:
        rows.append(("Teacher", "none (trained on labels alone)"))
    if run.get("source") or run.get("description"):
        rows.append(("Recipe", " — ".join(str(run[k]) for k in ("source", "description") if run.get(k))))
    if loss.get("task"):
        rows.append(("Task loss", _code(loss["task"])))
    if train:
        rows.append(("Schedule", f"{train.get('epochs')} epochs, {train.get('optimizer')} lr {train.get('lr')}, "
                                 f"{train.get('scheduler')} schedule, batch {train.get('batch_size')}, "
                                 f"seed {train.get('seed')}"))
    if data.get("csv"):
        rows.append(("Labels", _code(_name(data["csv"]))))
    return rows


def _metric_lines(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    shown = {k for split in metrics.values() for k, v in split.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "spread"}
    columns = [k for k in METRIC_ORDER if k in shown] + sorted(shown - set(METRIC_ORDER))
    if not columns:
        return ["Not measured."]
    lines = ["| split | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for split, values in metrics.items():
        cells = [f"{values[k]:.4f}" if isinstance(values.get(k), (int, float)) else "" for k in columns]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return lines


def model_card(values: Mapping[str, Any], run_config: Mapping[str, Any] | None = None, *, title: str,
               data_note: str | None = None) -> str:
    """The Markdown card of a model folder whose ``config.json`` holds ``values``; ``run_config`` is
    the run configuration it was trained with (``{}`` or ``None``: unknown)."""
    license = values.get("license") or "other"
    lines = ["---", f"license: {license}", "library_name: kdfiqa", "tags:", *(f"- {tag}" for tag in TAGS), "---", "",
             f"# {title}", "",
             "A face-image-quality assessment (FIQA) model distilled with kdfiqa: it scores how useful a face image is "
             "for recognition.", "", "## Model", "", *_table(_model_rows(values)), "", "## Training", ""]
    run = run_config or {}
    lines += _table(_training_rows(run)) if run else ["Not recorded: the folder was written from a model, not from "
                                                      "the checkpoint of its run."]
    lines += ["", "## Metrics", "", *_metric_lines(values.get("metrics") or {}), "", "## Data", "",
              data_note or DEFAULT_DATA_NOTE, "", "## Use", "",
              "```bash",
              "pip install kdfiqa",
              "kdfiqa predict hf-hub:ORG/NAME photos/ --out scores.csv   # or the folder's path",
              "kdfiqa evaluate hf-hub:ORG/NAME --root data/val --csv data/val.csv",
              "```", "",
              "```python",
              "from kdfiqa.targets import load_target",
              "model = load_target(\"hf-hub:ORG/NAME\")  # eval mode; model.deploy_config says how to feed it",
              "```", "",
              "The weights are `model.safetensors`; `config.json` holds the deploy config (registered name, "
              "arguments, input size, evaluation transform, normalisation, output) and the measured cost.", "",
              "## Licence", "", f"The weights are released under `{license}`.", ""]
    return "\n".join(lines)
