"""structkd: Structural Knowledge Distillation for structured predictors.

Wang et al., ACL 2021, "Structural Knowledge Distillation: Tractably Distilling Information for
Structured Predictor".
"""

from structkd import kd
from structkd.data.tokenize import Token, tokenize
from structkd.kd import structural_kd_loss
from structkd.predictor import Entity, ParsedSentence, Predictor, TaggedSentence, load
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
    "Entity",
    "HeadSelection",
    "LinearChainCRF",
    "ParsedSentence",
    "Predictor",
    "SemiMarkovCRF",
    "SiblingDependencyCRF",
    "Structure",
    "TaggedSentence",
    "Token",
    "TokenSoftmax",
    "kd",
    "load",
    "structural_kd_loss",
    "tokenize",
]
__version__ = "0.1.0"
