"""Per-sentence test counts of a run, and a paired significance test over test sentences.

A corpus-level score (span F1, UAS, LAS) is a function of counts summed over sentences: for NER
``(correct, predicted, gold)`` entities, for parsing ``(correct heads, correct labeled heads,
scored words)``. Storing each test sentence's counts (``test_counts.json``, a few tens of kB, not
the predictions themselves) is enough to recompute the score of any subset or mixture of two
systems' outputs, which is what a paired test needs.

The test is paired approximate randomization (Noreen 1989, *Computer-Intensive Methods for
Testing Hypotheses*; Riezler and Maxwell 2005, "On some pitfalls in automatic evaluation and
significance testing for MT"): under the null hypothesis that systems A and B are exchangeable,
swapping A's and B's output on any test sentence leaves the score difference's distribution
unchanged. With several seeds, the statistic is the mean over matched seeds of the corpus-score
difference, and every (seed, sentence) pair is swapped independently. The p-value is two-sided,
``(1 + #{|d*| >= |d|}) / (1 + samples)``, so identical systems get p = 1 and p is never 0.

Run as a module, it writes a model's counts: ``python -m structkd.lab.significance MODEL TEST OUT``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from structkd.io import atomic_write_bytes
from structkd.models.checkpoint import load_model
from structkd.tasks import get_task

__all__ = [
    "FIELDS",
    "corpus_score",
    "exact_randomization",
    "paired_randomization",
    "read_counts",
    "sentence_counts",
    "write_counts",
]

FIELDS = {
    "f1": ("correct", "predicted", "gold"),
    "uas": ("heads", "labeled", "words"),
    "las": ("heads", "labeled", "words"),
}


def corpus_score(counts: np.ndarray, metric: str) -> np.ndarray:
    """The corpus score, in percent, of summed counts.

    Args:
        counts: ``[..., 3]`` summed counts in the order of ``FIELDS[metric]``.
        metric: ``f1`` (``2 c / (p + g)``, conlleval's F1), ``uas`` or ``las``.

    Returns:
        ``[...]`` scores; 0 where the denominator is 0 (as conlleval and AttachmentScore).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if metric == "f1":
        num, den = 2.0 * counts[..., 0], counts[..., 1] + counts[..., 2]
    elif metric in ("uas", "las"):
        num, den = counts[..., 0 if metric == "uas" else 1], counts[..., 2]
    else:
        raise ValueError(f"unknown metric {metric!r}: expected one of {sorted(FIELDS)}")
    return np.where(den > 0, 100.0 * num / np.maximum(den, 1e-300), 0.0)


def _check_pairs(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> list[tuple[Any, Any]]:
    if not a or len(a) != len(b):
        raise ValueError(f"expected the same number (>= 1) of seeds, got {len(a)} and {len(b)}")
    pairs = [
        (np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)) for x, y in zip(a, b)
    ]
    for x, y in pairs:
        if x.shape != y.shape or x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(
                f"counts must be [sentences, 3] of the same shape: {x.shape}, {y.shape}"
            )
    return pairs


def _difference(pairs: list[tuple[Any, Any]], metric: str) -> float:
    return float(
        np.mean([corpus_score(x.sum(0), metric) - corpus_score(y.sum(0), metric) for x, y in pairs])
    )


def paired_randomization(
    a: Sequence[np.ndarray],
    b: Sequence[np.ndarray],
    metric: str = "f1",
    samples: int = 10_000,
    seed: int = 0,
    chunk: int = 1_000,
) -> float:
    """Two-sided p-value of paired approximate randomization for ``score(A) != score(B)``.

    Args:
        a, b: per matched seed, ``[sentences, 3]`` count arrays of systems A and B on the same
            test sentences in the same order (``FIELDS[metric]`` columns).
        metric: ``f1``, ``uas`` or ``las`` (see :func:`corpus_score`).
        samples: random relabelings.
        seed: seed of the random swaps (same inputs and seed: same p-value).
        chunk: relabelings drawn at once (memory ``chunk x sentences`` floats).

    Returns:
        ``(1 + hits) / (1 + samples)`` where hits counts relabelings whose absolute mean score
        difference reaches the observed one.

    Complexity: O(samples x seeds x sentences) time.
    """
    pairs = _check_pairs(a, b)
    observed = abs(_difference(pairs, metric))
    rng = np.random.default_rng(seed)
    hits = 0
    done = 0
    while done < samples:
        size = min(chunk, samples - done)
        diff = np.zeros(size)
        for x, y in pairs:
            swaps = rng.random((size, len(x))) < 0.5  # [size, sentences]
            moved = swaps.astype(np.float64) @ (y - x)  # [size, 3]: what A gains from B
            sum_x, sum_y = x.sum(0) + moved, y.sum(0) - moved
            diff += corpus_score(sum_x, metric) - corpus_score(sum_y, metric)
        diff /= len(pairs)
        hits += int(np.count_nonzero(np.abs(diff) >= observed - 1e-9))
        done += size
    return (hits + 1) / (samples + 1)


def exact_randomization(
    a: Sequence[np.ndarray], b: Sequence[np.ndarray], metric: str = "f1"
) -> float:
    """The exact permutation p-value: every one of the ``2^units`` swap patterns (units = seeds x
    sentences, at most 20), the fraction whose absolute difference reaches the observed one.

    The limit of :func:`paired_randomization` as ``samples`` grows; an oracle for tests.
    """
    pairs = _check_pairs(a, b)
    units = sum(len(x) for x, _ in pairs)
    if units > 20:
        raise ValueError(f"{units} (seed, sentence) units: too many to enumerate (at most 20)")
    observed = abs(_difference(pairs, metric))
    hits = 0
    for pattern in itertools.product((False, True), repeat=units):
        swapped, start = [], 0
        for x, y in pairs:
            mask = np.array(pattern[start : start + len(x)], dtype=bool)[:, None]
            swapped.append((np.where(mask, y, x), np.where(mask, x, y)))
            start += len(x)
        hits += abs(_difference(swapped, metric)) >= observed - 1e-9
    return hits / 2**units


def sentence_counts(
    task_name: str, model: Any, sentences: Sequence[Any], include_punct: bool = False
) -> dict[str, Any]:
    """Each labeled test sentence's counts under ``model``'s predictions.

    Args:
        task_name: a registered task (``ner``, ``dep``): its ``sentence_counts`` count.
        model: a loaded model of that task.
        sentences: labeled sentences as the task reads them.
        include_punct: parsing: score punctuation too (as ``data.include_punct``).

    Returns:
        ``{"metric", "fields", "sentences", "words_sha256", "score", "counts"}``: ``counts`` is
        flat, ``3 x sentences`` integers (row-major); ``score`` is the corpus score they give;
        ``words_sha256`` identifies the test sentences (pairs must share it).
    """
    task = get_task(task_name)
    words = [task.words(s) for s in sentences]
    predicted = task.predict(model, words)
    metric, rows = task.sentence_counts(sentences, predicted, include_punct)
    array = np.array(rows, dtype=np.int64).reshape(-1, 3)
    digest = hashlib.sha256(json.dumps(words, ensure_ascii=False).encode("utf-8")).hexdigest()
    return {
        "metric": metric,
        "fields": list(FIELDS[metric]),
        "sentences": len(rows),
        "words_sha256": digest,
        "score": float(corpus_score(array.sum(0), metric)),
        "counts": [int(v) for v in array.reshape(-1)],
    }


def write_counts(record: dict[str, Any], path: str | Path) -> None:
    """Writes a :func:`sentence_counts` record compactly (one line), atomically."""
    text = json.dumps(record, separators=(",", ":")) + "\n"
    atomic_write_bytes(Path(path), text.encode("utf-8"))


def read_counts(path: str | Path) -> tuple[dict[str, Any], np.ndarray]:
    """A ``test_counts.json`` record and its ``[sentences, 3]`` count array."""
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    return record, np.asarray(record["counts"], dtype=np.int64).reshape(-1, 3)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m structkd.lab.significance MODEL TEST OUT [--format F] [--include-punct]``."""
    parser = argparse.ArgumentParser(prog="python -m structkd.lab.significance")
    parser.add_argument("model", help="model directory")
    parser.add_argument("test", help="labeled test corpus")
    parser.add_argument("out", help="JSON file to write")
    parser.add_argument("--format", default="auto")
    parser.add_argument("--include-punct", action="store_true")
    args = parser.parse_args(argv)
    model: Any = load_model(args.model)
    sentences = get_task(model.task).read_labeled(args.test, args.format)
    write_counts(sentence_counts(model.task, model, sentences, args.include_punct), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
