"""Evaluation metrics: conlleval span F1 for NER, attachment scores for parsing."""

from structkd.metrics.attachment import AttachmentScore, is_punctuation, non_punct_mask
from structkd.metrics.span_f1 import SpanF1, prf

__all__ = ["AttachmentScore", "SpanF1", "is_punctuation", "non_punct_mask", "prf"]
