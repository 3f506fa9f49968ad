"""Loss functions for FIQA training and distillation, a registry, and a weighted sum of terms.

``create_loss("hybrid")``, ``list_losses()``, ``WeightedSum("1.0*hybrid + 0.5*temperature_mse")``.
Every loss's docstring gives its formula and its source in the challenge report (the seed).
"""

from __future__ import annotations

from .composite import ConquerItLoss, CoReFaceLoss, CorrLoss, HybridLoss
from .correlation import NormInNormPLCCLoss, PLCCLoss
from .distillation import RankKDLoss, TemperatureMSELoss
from .feature import FeatureLoss
from .ranking import AdaptiveMarginLoss, RankLoss
from .registry import LOSS_KINDS, create_loss, list_losses, loss_class, register_loss
from .regression import FocalSmoothLoss, L1Loss, MSELoss, WingLoss
from .weighted_sum import WeightedSum, parse_formula

__all__ = [
    "LOSS_KINDS",
    "create_loss",
    "list_losses",
    "loss_class",
    "register_loss",
    "WeightedSum",
    "parse_formula",
    "MSELoss",
    "L1Loss",
    "WingLoss",
    "FocalSmoothLoss",
    "PLCCLoss",
    "NormInNormPLCCLoss",
    "RankLoss",
    "AdaptiveMarginLoss",
    "CorrLoss",
    "HybridLoss",
    "ConquerItLoss",
    "CoReFaceLoss",
    "TemperatureMSELoss",
    "RankKDLoss",
    "FeatureLoss",
]
