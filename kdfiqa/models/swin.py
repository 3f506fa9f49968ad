"""The ECNU-SJTU winner's teacher: torchvision's Swin-B with a two-layer linear quality head.

:func:`ecnu_sjtu_teacher` is the released ``FIQA_Swin_B`` (github sunwei925/Efficient-FIQA,
``models/FIQA_model.py``) exactly: ``torchvision.models.swin_b`` with its classifier replaced by an
identity (its final LayerNorm and global average pooling kept), then Linear(1024, 128) ->
Linear(128, 1), no activation, a linear output, at 448x448 (``config_SwinB.py``). Swin Transformer:
Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows", ICCV 2021.
"""

from __future__ import annotations

from torch import Tensor, nn

from .heads import FIQARegressor
from .registry import register_model

__all__ = ["TorchvisionSwinB", "ecnu_sjtu_teacher"]

ECNU_SJTU_TEACHER_INPUT = (3, 448, 448)
"""The winner's teacher resolution (``config_SwinB.py``: Resize(448) + crop 448)."""
ECNU_SJTU_TEACHER_HEAD = {"pool": "avg", "hidden": (128,), "norm": None, "act": None, "out_activation": None}
"""``models/FIQA_model.py`` ``FIQA_Swin_B.quality``: Linear(1024, 128) -> Linear(128, 1), no activation."""


class TorchvisionSwinB(nn.Module):
    """torchvision's Swin-B up to its classifier: ``forward_features(x)`` is the final LayerNorm's
    output as a (B, 1024, H/32, W/32) map, which the quality head average-pools as torchvision's own
    ``avgpool`` does. Any input size works (torchvision pads to whole windows).

    ``pretrained=True`` loads torchvision's ``Swin_B_Weights.DEFAULT`` (ImageNet-1k, downloaded).
    """

    num_features = 1024

    def __init__(self, pretrained: bool = False) -> None:
        super().__init__()
        from torchvision.models import Swin_B_Weights, swin_b

        network = swin_b(weights=Swin_B_Weights.DEFAULT if pretrained else None)
        self.features = network.features
        self.norm = network.norm

    def forward_features(self, x: Tensor) -> Tensor:
        return self.norm(self.features(x)).permute(0, 3, 1, 2)


@register_model(name="ecnu_sjtu_teacher", default_input_size=ECNU_SJTU_TEACHER_INPUT, is_student=False)
def ecnu_sjtu_teacher(pretrained: bool = False) -> FIQARegressor:
    """The ECNU-SJTU winner's teacher, exactly: torchvision Swin-B, Linear(1024,128) -> Linear(128,1), linear output, 448x448."""
    return FIQARegressor(TorchvisionSwinB(pretrained), head=dict(ECNU_SJTU_TEACHER_HEAD),
                         default_input_size=ECNU_SJTU_TEACHER_INPUT)
