"""Word embeddings (optionally from a pretrained text file), casing features and the char CNN."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn


def read_word_vectors(path: str | Path, wanted: Iterable[str] | None = None) -> dict[str, Tensor]:
    """Reads a word-vector text file (GloVe, word2vec or fastText ``.vec`` text format).

    Each line is ``word v1 ... vD``; a first line holding just two integers (the word2vec /
    fastText header ``count dim``) is skipped. Lines whose width differs from the first vector's
    are skipped too (some files carry words with spaces).

    Args:
        path: the text file.
        wanted: if given, only these words (or their lowercase forms) are kept, which keeps memory
            at O(|wanted| D) for multi-GB files.

    Returns:
        word -> FloatTensor [D].

    Raises:
        ValueError: if the file holds no vector.
    """
    keep = None if wanted is None else set(wanted) | {w.lower() for w in wanted}
    vectors: dict[str, Tensor] = {}
    dim = -1
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle):
            fields = line.rstrip().split(" ")
            if line_no == 0 and len(fields) == 2 and all(f.isdigit() for f in fields):
                continue
            if len(fields) < 2:
                continue
            if dim < 0:
                dim = len(fields) - 1
            if len(fields) - 1 != dim or (keep is not None and fields[0] not in keep):
                continue
            vectors[fields[0]] = torch.tensor([float(v) for v in fields[1:]])
    if dim < 0:
        raise ValueError(f"{path}: no word vectors found")
    return vectors


class WordEmbedding(nn.Module):
    """A lookup table of word vectors; index 0 is padding, index 1 the unknown word.

    Args:
        num_words: vocabulary size (padding and unknown included).
        dim: vector size D.
        dropout: dropout on the output vectors.
    """

    def __init__(self, num_words: int, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.table = nn.Embedding(num_words, dim, padding_idx=0)
        nn.init.uniform_(self.table.weight, -math.sqrt(3.0 / dim), math.sqrt(3.0 / dim))
        with torch.no_grad():
            self.table.weight[0].zero_()
        self.dropout = nn.Dropout(dropout)
        self.dim = dim

    def load_pretrained(self, words: Sequence[str], vectors: dict[str, Tensor]) -> int:
        """Copies pretrained vectors into the rows of ``words`` (exact form, else lowercase).

        Args:
            words: the vocabulary, row i = ``words[i]``.
            vectors: word -> FloatTensor [D] (see ``read_word_vectors``).

        Returns:
            The number of rows initialised.

        Raises:
            ValueError: if the vectors' size differs from D.
        """
        found = 0
        with torch.no_grad():
            for row, word in enumerate(words):
                vector = vectors.get(word, vectors.get(word.lower()))
                if vector is None or row == 0:
                    continue
                if vector.numel() != self.dim:
                    raise ValueError(
                        f"pretrained vectors have size {vector.numel()}, not {self.dim}"
                    )
                self.table.weight[row] = vector
                found += 1
        return found

    def forward(self, word_ids: Tensor) -> Tensor:
        """Word vectors [B, N, D] of word ids [B, N]."""
        return self.dropout(self.table(word_ids))  # [B, N, D]


MAX_WORD_CHARS = 160
"""Characters of a word the char CNN reads: inputs are collated from a word's first 160.

Longer than every token of the shared corpora (the longest, a URL in UD English-EWT, has 140), so
training on them sees whole words; a 200,000-character "word" in a prediction input costs what a
160-character one does instead of a [B, N, 200,000] tensor (128 GB for a 20,000-token line)."""

_CHUNK_CHARS = 2**19
"""Character positions per CharCNN step: a larger batch (a very long sentence; a training batch of
ordinary sentences holds some 10^4-10^5) is convolved in slices of words, each word on its own
as before, so that the [words, F, C] feature map stays under 2^19 F floats at any length."""


class CharCNN(nn.Module):
    """Character CNN word features (Ma & Hovy, ACL 2016): embed, convolve, max-pool over chars.

    Cost O(B N C K F d) for C characters per word, kernel K, F filters, char size d; memory
    O(min(B N C, 2^19) (F + d)) (``_CHUNK_CHARS``).

    Args:
        num_chars: character vocabulary size (0 = padding, 1 = unknown).
        char_dim: character vector size d.
        filters: number of convolution filters F (the output size).
        kernel_size: convolution width K (odd, so padding keeps C positions).
        dropout: dropout on the character vectors.
    """

    def __init__(
        self,
        num_chars: int,
        char_dim: int,
        filters: int,
        kernel_size: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_chars, char_dim, padding_idx=0)
        self.conv = nn.Conv1d(char_dim, filters, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)
        self.dim = filters

    def forward(self, char_ids: Tensor) -> Tensor:
        """Word features [B, N, F] from character ids [B, N, C] (0 = padding).

        Padding characters are excluded from the max; a word with no characters gets zeros.
        """
        batch, max_len, max_chars = char_ids.shape
        flat = char_ids.reshape(batch * max_len, max_chars)  # [B*N, C]
        step = max(1, _CHUNK_CHARS // max(max_chars, 1))
        if len(flat) <= step:
            return self._words(flat).reshape(batch, max_len, -1)
        parts = [self._words(flat[i : i + step]) for i in range(0, len(flat), step)]
        return torch.cat(parts).reshape(batch, max_len, -1)  # [B, N, F]

    def _words(self, flat: Tensor) -> Tensor:
        """Features [M, F] of M words' character ids [M, C]."""
        chars = self.dropout(self.embed(flat))  # [M, C, d]
        features = self.conv(chars.transpose(1, 2))  # [M, F, C]
        mask = (flat != 0)[:, None, :]  # [M, 1, C]
        features = features.masked_fill(~mask, float("-inf")).max(-1).values  # [M, F]
        return features.masked_fill(~mask.any(-1), 0.0)


CASING_CLASSES = (
    "<pad>",
    "numeric",
    "mainly_numeric",
    "all_lower",
    "all_upper",
    "initial_upper",
    "contains_digit",
    "other",
)
"""The classes of ``casing_class`` (Reimers & Gurevych, 2017, arXiv:1707.06799); 0 = padding."""


def casing_class(word: str) -> int:
    """The casing class of a word (an index into ``CASING_CLASSES``, never 0).

    A lowercased pretrained table maps ``Apple`` and ``apple`` to one vector; this small
    feature gives the model back what the table lost.
    """
    digits = sum(c.isdigit() for c in word)
    if word and digits == len(word):
        return 1
    if word and digits / len(word) > 0.5:
        return 2
    if word.islower():
        return 3
    if word.isupper():
        return 4
    if word[:1].isupper():
        return 5
    if digits:
        return 6
    return 7


def casing_ids(tokens: Sequence[Sequence[str]], width: int) -> Tensor:
    """LongTensor [B, width] of casing classes (0 at padding). O(total characters)."""
    ids = torch.zeros(len(tokens), width, dtype=torch.long)
    for b, sentence in enumerate(tokens):
        classes = [casing_class(w) for w in sentence]
        ids[b, : len(sentence)] = torch.tensor(classes, dtype=torch.long)
    return ids


class CasingEmbedding(nn.Module):
    """A learned vector per casing class (``casing_class``).

    Args:
        dim: vector size.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(len(CASING_CLASSES), dim, padding_idx=0)
        self.dim = dim

    def forward(self, casing: Tensor) -> Tensor:
        """Casing vectors [B, N, dim] of casing classes [B, N]."""
        return self.table(casing)  # [B, N, dim]
