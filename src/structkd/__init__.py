"""structkd: Structural Knowledge Distillation for structured predictors.

Wang et al., ACL 2021, "Structural Knowledge Distillation: Tractably Distilling Information for
Structured Predictor".
"""

from structkd import kd
from structkd.kd import structural_kd_loss
from structkd.structures import (
    DependencyCRF,
    HeadSelection,
    LinearChainCRF,
    SemiMarkovCRF,
    SiblingDependencyCRF,
    Structure,
    TokenSoftmax,
)

__all__ = [
    "DependencyCRF",
    "HeadSelection",
    "LinearChainCRF",
    "SemiMarkovCRF",
    "SiblingDependencyCRF",
    "Structure",
    "TokenSoftmax",
    "kd",
    "structural_kd_loss",
]
__version__ = "0.1.0"
