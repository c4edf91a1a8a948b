"""A tiny random Hugging Face token classifier and its WordPiece tokenizer, built in code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

FIXTURE_LABELS = ["I-ORG", "O", "B-PER", "B-LOC", "I-PER", "B-ORG", "I-LOC"]
"""The fixture corpus' BIO labels, deliberately in an order of no scheme."""


def tiny_token_classifier(
    directory: Path,
    labels: Sequence[str] = FIXTURE_LABELS,
    max_positions: int = 64,
    seed: int = 0,
    words: Sequence[str] = (),
) -> Path:
    """Saves a random ``BertForTokenClassification`` over ``labels`` with a tokenizer whose
    vocabulary holds ``words`` (lowercased) and the pieces that split ``london`` into
    ``lon ##don``; returns ``directory``. Nothing is downloaded."""
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "lon", "##don", "##s", "##a"]
    vocab += sorted({w.lower() for w in words} - set(vocab) - {"london"})
    directory.mkdir(parents=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=max_positions,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    model = transformers.BertForTokenClassification(config)
    with torch.no_grad():  # sharper than a random init, so that mapping and pooling matter
        model.classifier.weight.mul_(20.0)
    model.save_pretrained(directory)
    transformers.BertTokenizerFast(str(directory / "vocab.txt")).save_pretrained(directory)
    return directory
