"""Models: encoder -> head -> structure, and their checkpoints."""

from structkd.models.base import Model
from structkd.models.checkpoint import CheckpointError, load_model, save_model
from structkd.models.depbase import DepBatch, DepModel, DepVocab, ParserOutput
from structkd.models.inputs import Batch, Vocabularies
from structkd.models.parser import BiaffineParser, build_dep_model
from structkd.models.seqlabel import SeqLabelParser
from structkd.models.tagger import Tagger, build_tagger

__all__ = [
    "Batch",
    "BiaffineParser",
    "CheckpointError",
    "DepBatch",
    "DepModel",
    "DepVocab",
    "Model",
    "ParserOutput",
    "SeqLabelParser",
    "Tagger",
    "Vocabularies",
    "build_dep_model",
    "build_tagger",
    "load_model",
    "save_model",
]
