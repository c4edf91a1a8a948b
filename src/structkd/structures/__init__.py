"""Structured distributions: pure tensor math with exact (or documented approximate) inference."""

from structkd.structures.base import Structure
from structkd.structures.token_softmax import TokenSoftmax

__all__ = ["Structure", "TokenSoftmax"]
