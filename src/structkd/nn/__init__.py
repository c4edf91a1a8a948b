"""Neural building blocks: embeddings, char CNN, BiLSTM, transformer wrapper, MLP, biaffine."""

from structkd.nn.embeddings import CharCNN, WordEmbedding, read_word_vectors
from structkd.nn.layers import MLP, Biaffine, BiLSTM

__all__ = ["MLP", "BiLSTM", "Biaffine", "CharCNN", "WordEmbedding", "read_word_vectors"]
