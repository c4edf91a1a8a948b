"""Neural building blocks: embeddings, char CNN, BiLSTM, transformer wrapper, MLP, biaffine and
triaffine scorers."""

from structkd.nn.embeddings import CharCNN, WordEmbedding, read_word_vectors
from structkd.nn.layers import MLP, Biaffine, BiLSTM, Triaffine

__all__ = [
    "MLP",
    "BiLSTM",
    "Biaffine",
    "CharCNN",
    "Triaffine",
    "WordEmbedding",
    "read_word_vectors",
]
