"""Marginal files: a teacher's marginals per sentence, on disk (format in docs/marginal-files.md).

A marginal file is two files with one stem: ``X.json``, the index (format, version, layout,
label names, each sentence's tokens, a SHA-256 of the tensors), and ``X.safetensors``, one tensor
per sentence and part, named ``"{sentence}.{part}"`` (sentences numbered from 0). Layouts:

======== =================== ============================================================
layout   tensors per sentence (n words, L labels, R entity types)
======== =================== ============================================================
tags     ``tags`` [n, L]      per-token tag distributions over ``labels`` (any tag scheme)
tag_pairs ``tags`` [n, L],    a chain teacher's tag marginals and adjacent tag-pair marginals
         ``pairs`` [n-1, L, L] ``pairs[i, a, c] = P(tag_i = a, tag_{i+1} = c)``
spans    ``spans`` [n, n, R]  ``spans[s, e, r]`` = P(words s..e, inclusive, form an entity of
                              type ``labels[r]``); zero unless s <= e
arcs     ``arcs`` [n, n+1]    ``arcs[d, h]`` = P(word d + 1 takes head h), h = 0 the root
======== =================== ============================================================

Every tensor is checked on reading: its shape, finite non-negative entries, and that it is a
(set of) distribution(s): tag rows and arc rows sum to 1, each position's tag pairs sum to 1 and
agree with the tags on both sides, no word is covered by spans of total probability above 1,
no word heads itself. Errors name the file and the sentence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import Tensor

from structkd.data.errors import DataError
from structkd.io import atomic_write_bytes, atomic_write_json, sha256
from structkd.models.checkpoint import tensors_to_bytes

FORMAT = "structkd-marginals"
VERSION = 1
LAYOUTS: dict[str, tuple[str, ...]] = {
    "tags": ("tags",),
    "tag_pairs": ("tags", "pairs"),
    "spans": ("spans",),
    "arcs": ("arcs",),
}
"""Per layout, the tensors each sentence has."""
TOLERANCE = 1e-4
"""How far a sum may be from 1 (float32 chain marginals of a 300-word sentence stay within it:
tests/test_numerics.py::test_long_float32_chain_marginals_sum_to_one_and_match_float64)."""


@dataclass
class MarginalFile:
    """A marginal file in memory.

    Attributes:
        path: the index file (``X.json``).
        layout: one of ``LAYOUTS``.
        labels: tag names (tags, tag_pairs), entity types (spans); empty for arcs.
        tokens: each sentence's words.
        rows: per sentence, its tensors by part name (float32, CPU).
        teacher: free text naming where the marginals come from.
    """

    path: str
    layout: str
    labels: list[str]
    tokens: list[list[str]]
    rows: list[dict[str, Tensor]]
    teacher: str = ""

    def digest(self) -> str:
        """SHA-256 of the tensors (names the teacher in the distillation cache)."""
        return str(json.loads(Path(self.path).read_text(encoding="utf-8"))["sha256"])


def marginal_paths(name: str | Path) -> tuple[Path, Path]:
    """The index and tensor files of a marginal file named ``X``, ``X.json`` or
    ``X.safetensors``."""
    path = Path(name)
    if path.suffix in (".json", ".safetensors"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".json"), path.with_name(path.name + ".safetensors")


def write_marginals(
    name: str | Path,
    layout: str,
    labels: list[str],
    tokens: list[list[str]],
    rows: list[dict[str, Tensor]],
    teacher: str = "",
) -> Path:
    """Writes a marginal file (tensors first, the index last, each atomically); returns the
    index path. The rows are checked as ``read_marginals`` checks them, before anything is
    written."""
    index, data_path = marginal_paths(name)
    marginals = MarginalFile(str(index), layout, labels, tokens, rows, teacher)
    check_marginals(marginals)
    tensors = {f"{i}.{part}": t.float() for i, row in enumerate(rows) for part, t in row.items()}
    data = tensors_to_bytes(tensors)
    atomic_write_bytes(data_path, data)
    atomic_write_json(
        index,
        {
            "format": FORMAT,
            "version": VERSION,
            "layout": layout,
            "labels": labels,
            "teacher": teacher,
            "data": data_path.name,
            "sha256": sha256(data),
            "sentences": [{"tokens": t} for t in tokens],
        },
    )
    return index


def read_marginals(name: str | Path) -> MarginalFile:
    """Reads and checks a marginal file.

    Raises:
        DataError: for a missing, foreign or inconsistent file, naming the sentence at fault.
    """
    index, data_path = marginal_paths(name)
    try:
        meta = json.loads(index.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise DataError(index, "no such marginal file") from error
    except (OSError, ValueError) as error:
        raise DataError(index, f"unreadable marginal index ({error})") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(index, f"not a marginal file (no \"format\": \"{FORMAT}\")")
    if meta.get("version") != VERSION:
        raise DataError(index, f"format version {meta.get('version')}, expected {VERSION}")
    layout = meta.get("layout")
    if layout not in LAYOUTS:
        raise DataError(index, f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    labels, sentences = meta.get("labels", []), meta.get("sentences")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise DataError(index, "labels must be a list of strings")
    if not isinstance(sentences, list):
        raise DataError(index, "sentences must be a list of {\"tokens\": [...]}")
    tokens = []
    for i, sentence in enumerate(sentences):
        words = sentence.get("tokens") if isinstance(sentence, dict) else None
        if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
            raise DataError(index, f"sentence {i + 1}: tokens must be a non-empty list of strings")
        tokens.append(words)
    data_path = index.with_name(str(meta.get("data", data_path.name)))
    try:
        data = data_path.read_bytes()
        tensors = load_safetensors(data)
    except OSError as error:
        raise DataError(data_path, f"unreadable marginal tensors ({error})") from error
    except SafetensorError as error:
        raise DataError(data_path, f"not a safetensors file ({error})") from error
    if meta.get("sha256") not in (None, sha256(data)):
        raise DataError(data_path, f"does not match {index.name} (checksum; rewritten?)")
    rows = []
    for i in range(len(tokens)):
        row = {}
        for part in LAYOUTS[layout]:
            tensor = tensors.get(f"{i}.{part}")
            if tensor is None:
                raise DataError(data_path, f"sentence {i + 1}: no tensor {i}.{part}")
            row[part] = tensor.float()
        rows.append(row)
    extra = len(tensors) - sum(len(r) for r in rows)
    if extra:
        raise DataError(data_path, f"{extra} tensors of no sentence of {index.name}")
    marginals = MarginalFile(str(index), layout, labels, tokens, rows, str(meta.get("teacher", "")))
    check_marginals(marginals)
    return marginals


def _shape(tensor: Tensor, shape: tuple[int, ...], what: str) -> str | None:
    if tuple(tensor.shape) != shape:
        return f"{what} has shape {list(tensor.shape)}, expected {list(shape)}"
    if not bool(torch.isfinite(tensor).all()):
        return f"{what} has entries that are not finite"
    if bool((tensor < -TOLERANCE).any()):
        return f"{what} has negative entries"
    return None


def _sums_to_one(sums: Tensor, what: str) -> str | None:
    bad = (sums - 1).abs() > TOLERANCE
    if bool(bad.any()):
        k = int(bad.flatten().nonzero()[0])
        return f"{what} {k + 1} sums to {float(sums.flatten()[k]):.6g}, not 1"
    return None


def _problem(layout: str, row: dict[str, Tensor], n: int, n_labels: int) -> str | None:
    """What is wrong with one sentence's tensors, or None."""
    if layout in ("tags", "tag_pairs"):
        tags = row["tags"]
        problem = _shape(tags, (n, n_labels), "tags") or _sums_to_one(tags.sum(-1), "tags row")
        if problem or layout == "tags":
            return problem
        pairs = row["pairs"]
        problem = _shape(pairs, (n - 1, n_labels, n_labels), "pairs") or _sums_to_one(
            pairs.sum((-1, -2)), "pairs position"
        )
        if problem:
            return problem
        left, right = pairs.sum(-1), pairs.sum(-2)  # [n-1, L]: marginals of tags i and i+1
        if bool(((left - tags[:-1]).abs() > TOLERANCE).any()) or bool(
            ((right - tags[1:]).abs() > TOLERANCE).any()
        ):
            return "pairs disagree with tags (summing pairs over one tag must give the other's)"
        return None
    if layout == "spans":
        spans = row["spans"]
        problem = _shape(spans, (n, n, n_labels), "spans")
        if problem:
            return problem
        if bool((spans.sum(-1).tril(-1) > TOLERANCE).any()):
            return "spans has mass on spans that end before they start (s > e)"
        cover = spans.sum(-1).flip(1).cumsum(1).flip(1).cumsum(0).diagonal()  # [n]
        if bool((cover > 1 + TOLERANCE).any()):
            k = int((cover > 1 + TOLERANCE).nonzero()[0])
            return f"word {k + 1} is covered by spans of total probability {float(cover[k]):.6g}"
        return None
    arcs = row["arcs"]
    problem = _shape(arcs, (n, n + 1), "arcs") or _sums_to_one(arcs.sum(-1), "arcs row")
    if problem:
        return problem
    if bool((torch.diagonal(arcs, offset=1) > TOLERANCE).any()):
        return "arcs has mass on a word heading itself"
    return None


def check_marginals(marginals: MarginalFile) -> None:
    """Raises DataError (naming the sentence) unless every sentence's tensors fit the layout.

    O(total size of the tensors).
    """
    if marginals.layout not in LAYOUTS:
        raise DataError(marginals.path, f"layout {marginals.layout!r} is not one of {LAYOUTS}")
    if marginals.layout != "arcs" and not marginals.labels:
        raise DataError(marginals.path, f"layout {marginals.layout} needs its labels")
    if len(marginals.rows) != len(marginals.tokens):
        raise DataError(marginals.path, "as many sentences of tensors as of tokens are needed")
    for i, (words, row) in enumerate(zip(marginals.tokens, marginals.rows)):
        problem = _problem(marginals.layout, row, len(words), len(marginals.labels))
        if problem:
            raise DataError(marginals.path, f"sentence {i + 1} ({_head(words)}): {problem}")


def check_corpus(marginals: MarginalFile, corpus: list[list[str]], what: str) -> None:
    """Raises DataError unless the file's sentences are ``corpus``, in order."""
    if len(marginals.tokens) != len(corpus):
        raise DataError(
            marginals.path,
            f"holds {len(marginals.tokens)} sentences, {what} {len(corpus)}; the file must "
            "cover the training sentences in order (data.train, then data.unlabeled)",
        )
    for i, (mine, theirs) in enumerate(zip(marginals.tokens, corpus)):
        if list(mine) != list(theirs):
            raise DataError(
                marginals.path,
                f"sentence {i + 1} has tokens ({_head(mine)}), {what} ({_head(theirs)})",
            )


def _head(words: list[str], k: int = 6) -> str:
    return " ".join(words[:k]) + (" ..." if len(words) > k else "")


def as_float_rows(rows: list[dict[str, Any]]) -> list[dict[str, Tensor]]:
    """Rows with every tensor as float32 on the CPU (what the file stores)."""
    return [{k: torch.as_tensor(v).detach().float().cpu() for k, v in r.items()} for r in rows]
