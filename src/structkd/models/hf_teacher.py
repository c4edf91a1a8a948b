"""Teachers structkd did not train: Hugging Face token classifiers, and the teacher loader.

``load_teacher(DIR)`` reads a structkd model directory or a directory written by
``save_pretrained`` of an ``AutoModelForTokenClassification`` (BERT, RoBERTa, XLM-R,
DistilBERT, ...) and its tokenizer, told apart by their ``config.json``.

A token classifier is a MaxEnt teacher (independent tokens, ``TokenSoftmax``) over its own
labels (``config.id2label``). A word's distribution is the softmax at its first subword
(Devlin et al., NAACL 2019, section 5.3), or (``subword_pooling="mean"``) the average of its
subwords' softmaxes. As a teacher of a student (``as_teacher_of``) its distributions are mapped
onto the student's tags by entity type (``structkd.kd.label_map``), after which every method that
takes a MaxEnt teacher applies: Structural KD to CRF (case 3) and MaxEnt students, Token KD
(the mapped distribution is its softmax), Posterior KD, Top-K.

Long sentences are windowed, not cut: a sentence whose subwords exceed the model's input limit
is read in windows of whole words overlapping by about half a window, and each word takes its
distribution from the window where it has the most context (the largest ``min(subwords before,
subwords after)``). A single word longer than a window keeps its first subwords.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from structkd.config import ConfigError, EncoderConfig, HeadConfig, ModelConfig
from structkd.kd.label_map import LabelMapError, TagMap
from structkd.models.base import Model
from structkd.models.checkpoint import CheckpointError, load_model, read_model_config
from structkd.models.inputs import Vocabularies
from structkd.nn.transformer import _transformers
from structkd.structures.tags import parse_tag
from structkd.structures.token_softmax import TokenSoftmax

POOLINGS = ("first", "mean")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# Models whose position ids start after the padding index (max_position_embeddings counts it).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer", "xlm-roberta-xl")


def hf_config(directory: str | Path) -> dict[str, Any] | None:
    """The ``config.json`` of a Hugging Face model directory, or None if it is not one."""
    path = Path(directory) / "config.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or "format" in meta or "model_type" not in meta:
        return None
    return meta


@dataclass
class WindowBatch:
    """A batch of B sentences as transformer windows.

    Attributes:
        tokens: the sentences' words.
        lengths: LongTensor [B].
        input_ids: LongTensor [W, S], every window of the batch, special tokens included.
        attention: LongTensor [W, S], 1 on real subwords.
        pieces: LongTensor [B, N, P] flat positions (window * S + position) of each word's
            subwords in the window it is read from; P is the most subwords a word keeps.
        piece_mask: BoolTensor [B, N, P].
    """

    tokens: list[list[str]]
    lengths: Tensor
    input_ids: Tensor
    attention: Tensor
    pieces: Tensor
    piece_mask: Tensor

    def to(self, device: torch.device | str) -> WindowBatch:
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return replace(self, **moved)


def windows(counts: list[int], budget: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Windows of whole words and the window each word is read from.

    Args:
        counts: subwords per word (each at most ``budget``).
        budget: subwords a window holds.

    Returns:
        ``[(start, end), ...]`` word ranges covering every word (consecutive windows overlap by
        about half a window), and per word the index of the window where it has the most
        context. O(n) windows, O(n) each.
    """
    n = len(counts)
    spans: list[tuple[int, int]] = []
    start = 0
    while True:
        end, used = start, 0
        while end < n and used + counts[end] <= budget:
            used += counts[end]
            end += 1
        end = max(end, start + 1)
        spans.append((start, end))
        if end >= n:
            break
        step, moved = start, 0
        while step < end and moved < budget / 2:
            moved += counts[step]
            step += 1
        start = min(max(step, start + 1), end)
        while sum(counts[start : end + 1]) > budget:  # the next window reaches a new word
            start += 1
    owner, best = [0] * n, [-1] * n
    for w, (s, e) in enumerate(spans):
        before = 0
        total = sum(counts[s:e])
        for i in range(s, e):
            context = min(before, total - before - counts[i])
            if context > best[i]:
                best[i], owner[i] = context, w
            before += counts[i]
    return spans, owner


class HFTagger(Model):
    """A Hugging Face token classifier as a (frozen) NER teacher.

    ``forward(batch)`` is a ``TokenSoftmax`` over ``labels``: the model's own labels, or, once
    bound to a student by ``as_teacher_of``, the student's tags. Never trained by structkd.

    Args:
        model: an ``AutoModelForTokenClassification`` in eval mode.
        tokenizer: its tokenizer.
        name: the directory it came from (for messages).
        subword_pooling: ``first`` or ``mean`` (see the module docstring).
        max_subwords: the model's input limit, special tokens included (None: from its config
            and tokenizer).
        tag_map: maps its labels onto a student's tags (None: its own labels).
        vocab: the student's vocabularies when bound (else built from its labels).
    """

    task = "ner"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        name: str,
        subword_pooling: str = "first",
        max_subwords: int | None = None,
        tag_map: TagMap | None = None,
        vocab: Vocabularies | None = None,
    ) -> None:
        super().__init__()
        if subword_pooling not in POOLINGS:
            raise ConfigError(f"subword_pooling must be one of {POOLINGS}, not {subword_pooling!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.subword_pooling = subword_pooling
        hf = model.config
        id2label = {int(k): v for k, v in hf.id2label.items()}
        self.own_labels = [id2label[i] for i in range(len(id2label))]
        self.tag_map = tag_map
        self.labels = tag_map.student_tags if tag_map is not None else self.own_labels
        self.config = ModelConfig(EncoderConfig(transformer=name), HeadConfig(kind="maxent"))
        if vocab is None:
            types = sorted({t for t in (_label_type(x) for x in self.own_labels) if t})
            vocab = Vocabularies(words=[], chars=[], entity_types=types)
        self.vocab = vocab
        if max_subwords is None:
            limit = int(getattr(hf, "max_position_embeddings", 512))
            if getattr(hf, "model_type", "") in _OFFSET_POSITIONS:
                limit -= int(getattr(hf, "pad_token_id", 1) or 0) + 1
            if 0 < int(getattr(tokenizer, "model_max_length", limit)) < limit:
                limit = int(tokenizer.model_max_length)
            max_subwords = limit
        self.front, self.back = _special_tokens(tokenizer)
        self.budget = max_subwords - len(self.front) - len(self.back)
        if self.budget < 1:
            raise CheckpointError(f"{name}: the model takes {max_subwords} subwords, too few")
        self.max_subwords = max_subwords
        self._pieces: dict[str, list[int]] = {}
        self.requires_grad_(False)

    def as_teacher_of(self, student: Model) -> HFTagger:
        """The same teacher with its labels mapped onto the student's tags by entity type.

        Raises:
            ConfigError: if the student is not a tagger, or some labels have no entity type
                of the student's (naming them).
        """
        vocab = getattr(student, "vocab", None)
        if student.task != "ner" or not isinstance(vocab, Vocabularies):
            raise ConfigError(f"{self.name}: a token classifier teaches NER taggers only")
        try:
            tag_map = TagMap(self.own_labels, vocab.tags, vocab.tag_scheme, self.name)
        except LabelMapError as error:
            raise ConfigError(str(error)) from error
        return HFTagger(
            self.model,
            self.tokenizer,
            self.name,
            self.subword_pooling,
            self.max_subwords,
            tag_map,
            vocab,
        )

    def _word_pieces(self, words: list[str]) -> list[list[int]]:
        """Subword ids of each word (tokenized alone, as ``is_split_into_words`` does)."""
        new = [w for w in dict.fromkeys(words) if w not in self._pieces]
        if new:
            encoded = self.tokenizer(
                [[w] for w in new], is_split_into_words=True, add_special_tokens=False
            )["input_ids"]
            unk = self.tokenizer.unk_token_id
            for word, ids in zip(new, encoded):
                self._pieces[word] = list(ids) or ([unk] if unk is not None else [0])
        return [self._pieces[w][: self.budget] for w in words]

    def collate(self, words: Any, /) -> WindowBatch:
        """Windows of the sentences' subwords (see ``windows``), padded."""
        sentences = [list(s) for s in words]
        rows: list[list[int]] = []
        places: list[list[list[tuple[int, int]]]] = []  # per sentence, per word: (window, pos)
        for sentence in sentences:
            pieces = self._word_pieces(sentence)
            spans, owner = windows([len(p) for p in pieces], self.budget)
            first = len(rows)
            offsets: list[dict[int, int]] = []
            for s, e in spans:
                offset, ids = {}, list(self.front)
                for i in range(s, e):
                    offset[i] = len(ids)
                    ids.extend(pieces[i])
                rows.append(ids + self.back)
                offsets.append(offset)
            places.append(
                [
                    [(first + owner[i], offsets[owner[i]][i] + j) for j in range(len(p))]
                    for i, p in enumerate(pieces)
                ]
            )
        width = max((len(r) for r in rows), default=1)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((max(len(rows), 1), width), pad, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for w, row in enumerate(rows):
            input_ids[w, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention[w, : len(row)] = 1
        n = max((len(s) for s in sentences), default=0) or 1
        p = max((len(x) for sent in places for x in sent), default=1)
        pieces_index = torch.zeros(len(sentences), n, p, dtype=torch.long)
        piece_mask = torch.zeros(len(sentences), n, p, dtype=torch.bool)
        for b, sent in enumerate(places):
            for i, word in enumerate(sent):
                for j, (w, pos) in enumerate(word):
                    pieces_index[b, i, j] = w * width + pos
                    piece_mask[b, i, j] = True
        return WindowBatch(
            tokens=sentences,
            lengths=torch.tensor([len(s) for s in sentences], dtype=torch.long),
            input_ids=input_ids,
            attention=attention,
            pieces=pieces_index,
            piece_mask=piece_mask,
        )

    @torch.no_grad()
    def word_distributions(self, batch: WindowBatch) -> Tensor:
        """Each word's distribution over the model's own labels [B, N, L] (0 on padding).

        One forward pass over every window of the batch: O(W S^2) attention.
        """
        batch = batch.to(self.device)
        logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention).logits
        probs = torch.softmax(logits.float(), -1).flatten(0, 1)  # [W * S, L]
        if self.subword_pooling == "first":
            words = probs[batch.pieces[..., 0]]  # [B, N, L]
        else:
            gathered = probs[batch.pieces] * batch.piece_mask[..., None]  # [B, N, P, L]
            count = batch.piece_mask.sum(-1, keepdim=True).clamp_min(1)  # [B, N, 1]
            words = gathered.sum(2) / count
        return words * batch.piece_mask[..., :1]  # padding words have no subwords

    def features(self, batch: Any) -> Tensor:
        """Log-probabilities [B, N, L] over ``labels`` (what ``from_features`` takes)."""
        probs = self.word_distributions(batch)
        if self.tag_map is not None:
            probs = self.tag_map.apply(probs, batch.lengths)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()

    def from_features(self, hidden: Tensor, lengths: Tensor) -> TokenSoftmax:
        return TokenSoftmax(hidden, lengths.to(hidden.device))

    def forward(self, batch: WindowBatch) -> TokenSoftmax:
        """The teacher's ``TokenSoftmax`` over ``labels``."""
        return self.from_features(self.features(batch), batch.lengths)

    def nll(self, batch: Any, output: Any = None) -> Tensor:
        raise ConfigError(f"{self.name}: a Hugging Face teacher is not trained by structkd")


def _special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a sentence ([CLS] and [SEP], <s> and </s>)."""
    plain = tokenizer([["a"]], is_split_into_words=True, add_special_tokens=False)["input_ids"][0]
    full = tokenizer([["a"]], is_split_into_words=True)["input_ids"][0]
    for k in range(len(full) - len(plain) + 1):
        if full[k : k + len(plain)] == plain:
            return list(full[:k]), list(full[k + len(plain) :])
    raise CheckpointError("the tokenizer changes a word when it adds its special tokens")


def _label_type(label: str) -> str | None:
    try:
        return parse_tag(label)[1]
    except ValueError:
        return None


def _files_digest(directory: Path, extra: str) -> str:
    """SHA-256 of every file of a model directory (names and bytes) and ``extra``."""
    digest = hashlib.sha256(extra.encode())
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def load_hf_teacher(
    directory: str | Path, device: torch.device | str = "cpu", subword_pooling: str = "first"
) -> HFTagger:
    """A ``save_pretrained`` token-classification directory (model and tokenizer) as a teacher.

    Raises:
        CheckpointError: if it is not a token classifier, lacks its tokenizer or weights.
    """
    directory = Path(directory)
    meta = hf_config(directory)
    if meta is None:
        raise CheckpointError(f"{directory}: not a Hugging Face model directory")
    architectures = meta.get("architectures") or []
    if not any(str(a).endswith("ForTokenClassification") for a in architectures):
        found = ", ".join(map(str, architectures)) or meta.get("model_type")
        raise CheckpointError(
            f"{directory}: a Hugging Face {found}, not a token classifier "
            "(AutoModelForTokenClassification)"
        )
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        raise CheckpointError(
            f"{directory}: no usable tokenizer (save it with save_pretrained too): none of "
            f"{', '.join(_TOKENIZER_FILES)}"
        )
    hf = _transformers()
    hf.utils.logging.disable_progress_bar()
    try:
        tokenizer = hf.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        if getattr(tokenizer, "add_prefix_space", True) is False:  # byte-level BPE, words apart
            tokenizer = hf.AutoTokenizer.from_pretrained(
                str(directory), local_files_only=True, add_prefix_space=True
            )
    except (OSError, ValueError, TypeError) as error:
        raise CheckpointError(
            f"{directory}: no usable tokenizer (save it with save_pretrained too): {error}"
        ) from error
    try:
        model = hf.AutoModelForTokenClassification.from_pretrained(
            str(directory), local_files_only=True
        )
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{directory}: the model does not load ({error})") from error
    return HFTagger(model, tokenizer, str(directory), subword_pooling).to(device)


def load_teacher(
    directory: str | Path, device: torch.device | str = "cpu", subword_pooling: str = "first"
) -> tuple[Model, str]:
    """A teacher from a structkd model directory or a Hugging Face token-classification one.

    Returns:
        The model (eval mode, on ``device``) and an identifier of its files for caches (the
        weights' SHA-256 for structkd models; a digest of every file and the pooling for
        Hugging Face ones).

    Raises:
        CheckpointError: if the directory is neither, or is incomplete.
    """
    if hf_config(directory) is not None:
        teacher = load_hf_teacher(directory, device, subword_pooling)
        return teacher, _files_digest(Path(directory), f"hf:{subword_pooling}")
    return load_model(directory, device), read_model_config(directory)["weights_sha256"]
