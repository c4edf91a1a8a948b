"""structkd: Structural Knowledge Distillation for structured predictors.

Wang et al., ACL 2021, "Structural Knowledge Distillation: Tractably Distilling Information for
Structured Predictor".
"""

from structkd.structures import (
    LinearChainCRF,
    SemiMarkovCRF,
    SiblingDependencyCRF,
    Structure,
    TokenSoftmax,
)

__all__ = ["LinearChainCRF", "SemiMarkovCRF", "SiblingDependencyCRF", "Structure", "TokenSoftmax"]
__version__ = "0.1.0"
