"""Structured distributions: pure tensor math with exact (or documented approximate) inference."""

from structkd.structures.base import Structure
from structkd.structures.linear_chain import LinearChainCRF
from structkd.structures.semi_markov import SemiMarkovCRF
from structkd.structures.sibling import SiblingDependencyCRF
from structkd.structures.token_softmax import TokenSoftmax

__all__ = ["LinearChainCRF", "SemiMarkovCRF", "SiblingDependencyCRF", "Structure", "TokenSoftmax"]
