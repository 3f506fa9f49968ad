"""A tiny registered FIQA model and a tiny synthetic data set for fast command-line tests."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kdfiqa.models import list_models, register_model

TINY = "tiny_fiqa_cli"
INPUT = 32


class TinyFIQA(nn.Module):
    """Two strided convolutions, global pooling and a linear head: image -> score in (0, 1)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, 1)
        self.default_input_size = (3, INPUT, INPUT)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


if TINY not in list_models():
    @register_model(name=TINY, default_input_size=(3, INPUT, INPUT))
    def tiny_fiqa_cli(width: int = 8, pretrained: bool = False) -> nn.Module:
        """Tiny test network."""
        return TinyFIQA(width)


def synthetic(tmp_path: Path, n: int, seed: int, name: str) -> tuple[Path, Path]:
    """(image folder, labels CSV) of ``n`` synthetic 40x40 faces."""
    from kdfiqa.data import make_synthetic_fiqa

    made = make_synthetic_fiqa(tmp_path / name, n, size=40, seed=seed)
    return made.image_dir, made.labels


def run_cli(capsys, argv) -> tuple[int, str, str]:
    """``kdfiqa ARGV`` in this process: (exit status, stdout, stderr), a ``SystemExit`` (argparse's
    usage errors) read as its status."""
    from kdfiqa.cli.main import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
