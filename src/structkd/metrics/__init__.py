"""Evaluation metrics: conlleval span F1 for NER, attachment scores for parsing (the words they
count come from the caller's mask, ``structkd.data.punct``)."""

from structkd.metrics.attachment import AttachmentScore
from structkd.metrics.span_f1 import SpanF1, prf

__all__ = ["AttachmentScore", "SpanF1", "prf"]
