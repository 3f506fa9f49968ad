"""Build your own student from EMOv2's iiRMB blocks, register it, and check it against the budget.

    python examples/custom_iirmb_student.py                      # fits vquala2025 at 224 and 224x336
    python examples/custom_iirmb_student.py --width 2.5          # too wide: shows where the cost goes
    python examples/custom_iirmb_student.py --input 224 512      # check the sizes you will deploy at

The backbone below is a plain ``nn.Module`` written out block by block: a stride-2 conv stem, then
four stages whose first block halves the resolution. Stages 1-2 mix tokens with 1x1 convolutions
(BN + SiLU), stages 3-4 with EMOv2's hybrid window attention (LN + GELU), as the EMOv2 paper lays
them out. Registering it makes it usable everywhere a model name is: ``kdfiqa budget``,
``kdfiqa distill --model``, :func:`kdfiqa.models.create_model` (which adds the quality head).
Exit status: 0 when it fits at every size, 1 when it does not.
"""

from __future__ import annotations

import argparse
import sys

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from kdfiqa.budget import VQUALA2025, BudgetExceeded, check, measure
from kdfiqa.models import create_model, register_backbone
from kdfiqa.models.emo_blocks import ConvNormAct, iiRMB

NAME = "example_iirmb_student"


class IiRMBStudent(nn.Module):
    """A four-stage iiRMB backbone: ``forward_features(x) -> (B, num_features, H/32, W/32)``."""

    def __init__(self, widths=(32, 48, 80, 160), depths=(1, 2, 4, 2), exp_ratio: float = 2.5,
                 window_size: int = 7, head_dim: int = 16, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.stem = ConvNormAct(3, widths[0] // 2, 3, 2, norm="bn", act="silu")
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, dim_in, k = [], widths[0] // 2, 0
        for i, (width, depth) in enumerate(zip(widths, depths)):
            early = i < 2
            blocks = []
            for j in range(depth):
                first = j == 0
                blocks.append(iiRMB(
                    dim_in, width, exp_ratio=exp_ratio * (2 if first else 1), stride=2 if first else 1,
                    norm="bn" if early else "ln", act="silu" if early else "gelu", dw_kernel_size=5,
                    attn="none" if early or first else "hybrid", head_dim=head_dim,
                    window_size=window_size, skip=not first, drop_path=rates[k]))
                dim_in, k = width, k + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(widths[-1], eps=1e-6)
        self.num_features = widths[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head_input(self, x: torch.Tensor) -> torch.Tensor:
        """The normed last feature map, which the quality head pools."""
        return self.norm(self.forward_features(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, num_features)."""
        return self.forward_head_input(x).mean((2, 3))


@register_backbone(name=NAME, default_input_size=(3, 224, 224), is_student=True)
def example_iirmb_student(width: float = 1.0, pretrained: bool = False, **kwargs) -> IiRMBStudent:
    """A small hand-built iiRMB student (examples/custom_iirmb_student.py)."""
    if pretrained:
        raise ValueError(f"{NAME} has no pretrained weights")
    widths = tuple(max(16, int(round(w * width / 16)) * 16) for w in (32, 48, 80, 160))
    return IiRMBStudent(widths=widths, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier (default: 1.0)")
    parser.add_argument("--input", nargs="+", default=["224", "224x336"], help="sizes to check")
    args = parser.parse_args(argv)

    model = create_model(NAME, width=args.width)
    with torch.no_grad():
        scores = model.eval()(torch.rand(2, 3, 97, 131))  # any resolution works
    console = Console()
    console.print(f"{NAME} (width x{args.width}): scores {tuple(scores.shape)} in (0, 1) at 97x131")

    table = Table(title=f"{NAME} vs {VQUALA2025.describe()}")
    for column in ("input", "GFLOPs", "params", "verdict"):
        table.add_column(column)
    for size in args.input:
        report = measure(model, size)
        table.add_row(size, f"{report.gflops:.4f}", f"{report.params:,}",
                      "within" if VQUALA2025.fits(report) else "OVER")
    console.print(table)
    try:
        check(model, VQUALA2025, args.input)
    except BudgetExceeded as exc:
        console.print(str(exc), markup=False, highlight=False)
        return 1
    console.print("fits the budget at every size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
