"""How long a budget check takes: ``kdfiqa.budget.measure`` on every registered model.

Goal (issue: foundation): measuring a 5 M-parameter model takes under 1 s. The 5 M-parameter model is
the seed's teacher layout (EMOv2-5M) when registered, else timm's ``efficientnet_b0``.
"""

from __future__ import annotations

import timm
import torch

from kdfiqa.budget import measure
from kdfiqa.models import create_model, list_models, model_info

from .common import median_seconds

TITLE = "Budget check time"


def run(quick: bool) -> dict:
    torch.manual_seed(0)
    names = list_models()
    if quick:
        names = [n for n in names if n in ("emo2_1m", "emo2_5m", "mobilenetv3_large_fiqa")]
    rows = []
    for name in names:
        model = create_model(name)
        size = model_info(name).default_input_size
        report = measure(model, size)
        seconds = median_seconds(lambda: measure(model, size), repeats=3 if quick else 5)
        rows.append({"model": name, "input": "x".join(map(str, size)), "params": report.params,
                     "GFLOPs": report.gflops, "seconds": seconds})
    if "emo2_5m" in names:
        reference = next(r for r in rows if r["model"] == "emo2_5m")
    else:
        model = timm.create_model("efficientnet_b0", pretrained=False)
        seconds = median_seconds(lambda: measure(model, 224), repeats=5)
        reference = {"model": "timm:efficientnet_b0", "input": "3x224x224",
                     "params": measure(model, 224).params, "seconds": seconds}
        rows.append(reference)
    return {
        "title": TITLE,
        "goal": "measure() of a 5M-parameter model takes under 1 s",
        "met": reference["seconds"] < 1.0,
        "columns": ["model", "input", "params", "GFLOPs", "seconds"],
        "rows": rows,
        "notes": [f"reference model for the goal: {reference['model']} "
                  f"({reference['params']:,} params): {reference['seconds']:.3f} s median"],
    }
