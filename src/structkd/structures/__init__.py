"""Structured distributions: pure tensor math with exact (or documented approximate) inference."""

from structkd.structures.base import Structure
from structkd.structures.dependency import DependencyCRF
from structkd.structures.head_selection import HeadSelection
from structkd.structures.linear_chain import LinearChainCRF
from structkd.structures.semi_markov import SemiMarkovCRF
from structkd.structures.sibling import SiblingDependencyCRF
from structkd.structures.token_softmax import TokenSoftmax

__all__ = [
    "DependencyCRF",
    "HeadSelection",
    "LinearChainCRF",
    "SemiMarkovCRF",
    "SiblingDependencyCRF",
    "Structure",
    "TokenSoftmax",
]
