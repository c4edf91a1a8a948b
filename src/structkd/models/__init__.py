"""Models: encoder -> head -> structure, and their checkpoints."""

from structkd.models.checkpoint import CheckpointError, load_model, save_model
from structkd.models.inputs import Batch, Vocabularies
from structkd.models.tagger import Tagger, build_tagger

__all__ = [
    "Batch",
    "CheckpointError",
    "Tagger",
    "Vocabularies",
    "build_tagger",
    "load_model",
    "save_model",
]
