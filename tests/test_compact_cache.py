"""The compact, streamed teacher cache of Structural KD (issue 16; docs/cache.md).

Oracles: the KD loss computed from the teacher directly on the training batch
(``kd.structural_kd_loss``), and ``tempered_projection`` for the stored forms' decoding, which
must give the very same tensors on the same batch.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from structkd import kd
from structkd.config import DistillConfig
from structkd.data.batching import bucket_batches
from structkd.io import atomic_write_bytes, atomic_write_json, sha256
from structkd.kd import projections
from structkd.kd.stored import (
    ChainPotentials,
    HalfMarginals,
    IndependentUnary,
    stored_form,
    tempered_projection,
)
from structkd.models.checkpoint import tensors_to_bytes
from structkd.models.pairs import pair_of
from structkd.structures.base import as_list
from structkd.structures.dependency import DependencyCRF
from structkd.structures.head_selection import HeadSelection
from structkd.structures.linear_chain import LinearChainCRF
from structkd.structures.semi_markov import SemiMarkovCRF
from structkd.structures.token_softmax import TokenSoftmax
from structkd.train import cache
from structkd.train.cache import (
    CacheWarning,
    cached_marginals,
    crop,
    data_hash,
    pad_batch,
    position_offsets,
)
from structkd.train.distill import Distiller
from test_teacher_cache import TOKENS, tagger

pytestmark = pytest.mark.usefixtures("one_thread")

TEMPERATURES = [(1.0, "global"), (2.0, "global"), (0.5, "local")]


def _chain(gen: torch.Generator, lengths: torch.Tensor, tags: int = 5) -> LinearChainCRF:
    batch, width = len(lengths), int(lengths.max())
    return LinearChainCRF(
        torch.randn(batch, width, tags, generator=gen) * 3,
        torch.randn(tags, tags, generator=gen),
        lengths,
        torch.randn(tags, generator=gen),
        torch.randn(tags, generator=gen),
    )


@pytest.mark.parametrize(("temperature", "mode"), TEMPERATURES)
@pytest.mark.parametrize("teacher_kind", ["crf", "maxent"])
def test_stored_forms_decode_to_the_projected_marginals_exactly(
    teacher_kind: str, temperature: float, mode: str
) -> None:
    """Encoded, cropped to each sentence, padded again and decoded: the same tensors, bit for
    bit, as projecting the teacher (lengths 0 and 1 included)."""
    gen = torch.Generator().manual_seed(4)
    lengths = torch.tensor([6, 1, 0, 4])
    student = _chain(gen, lengths)
    teacher: Any = _chain(gen, lengths)
    if teacher_kind == "maxent":
        teacher = TokenSoftmax(torch.randn(4, 6, 5, generator=gen) * 3, lengths)
    form = stored_form(teacher, student)
    assert isinstance(form, ChainPotentials if teacher_kind == "crf" else IndependentUnary)
    rows = form.encode(teacher, student, temperature, mode, "BIOES")
    cut = [crop(rows, b, int(n), form.offsets) for b, n in enumerate(lengths)]
    padded = as_list(pad_batch(cut, 6, form.offsets, torch.zeros(())))
    got = form.decode(padded, form.constants(teacher), student, temperature, mode, "BIOES")
    expected = tempered_projection(teacher, student, temperature, mode)
    assert len(got) == len(expected) == 2
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    one = form.expand(cut[3], form.constants(teacher), temperature, mode, "BIOES")
    torch.testing.assert_close(one[0], expected[0][3, :4])  # alone: other padding, rounding
    torch.testing.assert_close(one[1], expected[1][3, :3])
    # What the loss reads: a CRF teacher's tag pairs summed over the positions (unless a local
    # temperature re-normalizes each position), giving the same KD loss.
    targets = form.loss_targets(padded, form.constants(teacher), student, temperature, mode, "")
    summed = teacher_kind == "crf" and (mode == "global" or temperature == 1.0)
    assert targets[1].shape == ((4, 5, 5) if summed else (4, 5, 5, 5))
    torch.testing.assert_close(targets[0], expected[0])
    pairs = expected[1].sum(1) if summed else expected[1]
    torch.testing.assert_close(targets[1], pairs, atol=1e-5, rtol=1e-5)
    loss = kd.structural_kd_loss_from_marginals(targets, student, temperature, "none")
    want = kd.structural_kd_loss_from_marginals(expected, student, temperature, "none")
    torch.testing.assert_close(loss, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_tempered_pair_sums_are_the_tempered_projections_pairs_summed(temperature: float) -> None:
    gen = torch.Generator().manual_seed(7)
    lengths = torch.tensor([5, 1, 3])
    teacher, student = _chain(gen, lengths), _chain(gen, lengths)
    unary, sums = projections.tempered_pair_sums(teacher, student, temperature)
    expected = tempered_projection(teacher, student, temperature, "global")
    torch.testing.assert_close(unary, expected[0])
    torch.testing.assert_close(sums, expected[1].sum(1), atol=1e-6, rtol=1e-6)
    assert not unary.requires_grad and not sums.requires_grad
    with pytest.raises(ValueError, match="tag sets differ in size: 5 vs 4"):
        projections.tempered_pair_sums(teacher, _chain(gen, lengths, tags=4))
    with pytest.raises(ValueError, match="lengths"):
        projections.tempered_pair_sums(teacher, _chain(gen, torch.tensor([5, 2, 3])))


def test_a_chain_teacher_gives_a_token_student_its_projection() -> None:
    """Compact CRF -> MaxEnt (case 2a): the loss reads the projected unary marginals."""
    gen = torch.Generator().manual_seed(8)
    lengths = torch.tensor([4, 2])
    teacher = _chain(gen, lengths)
    student = TokenSoftmax(torch.randn(2, 4, 5, generator=gen), lengths)
    form = ChainPotentials()
    rows = form.encode(teacher, student, 1.0, "global", "BIOES")
    got = form.loss_targets(rows, form.constants(teacher), student, 1.0, "global", "BIOES")
    assert torch.equal(got, tempered_projection(teacher, student))


def test_pairs_without_a_smaller_form_store_their_marginals() -> None:
    """A MaxEnt student's parts are per token already; a span teacher has no chain form."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([3, 2])
    chain = _chain(gen, lengths)
    tokens = TokenSoftmax(torch.randn(2, 3, 5, generator=gen), lengths)
    spans = SemiMarkovCRF(torch.randn(2, 3, 3, 2, generator=gen), lengths)
    assert stored_form(chain, tokens) is None and stored_form(tokens, tokens) is None
    assert stored_form(spans, chain) is None
    per_sentence = LinearChainCRF(chain.emissions, chain.transitions.expand(2, 5, 5), lengths)
    assert stored_form(per_sentence, chain) is None  # L^2 a sentence: not smaller


def _half_pairs(gen: torch.Generator, lengths: torch.Tensor) -> dict[str, tuple[Any, Any]]:
    """Span and tree pairs at a trained model's score scale (a few units per part)."""
    batch, width = len(lengths), int(lengths.max())
    arcs = [torch.randn(batch, width + 1, width + 1, generator=gen) * 3 for _ in range(2)]
    spans = SemiMarkovCRF(torch.randn(batch, width, width, 4, generator=gen) * 3, lengths)
    tokens = TokenSoftmax(torch.randn(batch, width, 17, generator=gen), lengths)
    return {
        "span->crf": (spans, _chain(gen, lengths, tags=17)),
        "span->maxent": (spans, tokens),
        "tree->tree": (
            DependencyCRF(arcs[0], lengths, projective=False),
            DependencyCRF(arcs[1], lengths, projective=False),
        ),
        "projective->heads": (DependencyCRF(arcs[0], lengths), HeadSelection(arcs[1], lengths)),
    }


@pytest.mark.parametrize("name", ["span->crf", "span->maxent", "tree->tree", "projective->heads"])
@pytest.mark.parametrize(("temperature", "mode"), TEMPERATURES)
def test_float16_marginals_keep_the_kd_loss_within_1e3_of_float32(
    name: str, temperature: float, mode: str
) -> None:
    """Span and tree pairs (``distill.stored: compact``) keep their projected marginals in
    float16: half the bytes, the loss within 1e-3 of itself, the student's gradient close."""
    gen = torch.Generator().manual_seed(11)
    lengths = torch.tensor([25, 9, 1, 14])
    teacher, student = _half_pairs(gen, lengths)[name]
    offsets = position_offsets(lambda w: as_list(student.marginals))  # layout, any length
    form = stored_form(teacher, student, offsets)
    assert isinstance(form, HalfMarginals) and stored_form(teacher, student) is None
    rows = form.encode(teacher, student, temperature, mode, "BIOES")
    exact = as_list(tempered_projection(teacher, student, temperature, mode))
    assert all(r.dtype == torch.float16 for r in rows)
    assert sum(r.nbytes for r in rows) * 2 == sum(e.nbytes for e in exact)
    got = form.decode(rows, {}, student, temperature, mode, "BIOES")
    for a, b in zip(as_list(got), exact):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2**-11, atol=1e-7)  # one float16 rounding
    scores = [p.detach().requires_grad_() for p in _potentials(student)]
    losses = []
    for targets in (got, exact if len(exact) > 1 else exact[0]):
        rebuilt = _rebuild(student, scores)
        loss = kd.structural_kd_loss_from_marginals(targets, rebuilt, temperature, "none")
        (grad,) = torch.autograd.grad(loss.sum(), scores[:1])
        losses.append((loss.detach(), grad))
    (half_loss, half_grad), (loss, grad) = losses
    assert float(loss[0]) > 10  # a long sentence's loss: far from what rounding could move
    assert bool(((half_loss - loss).abs() <= 1e-3 * loss.abs().clamp(min=1)).all())
    torch.testing.assert_close(half_grad, grad, rtol=0, atol=2e-3)


def _potentials(student: Any) -> list[torch.Tensor]:
    if isinstance(student, LinearChainCRF):
        return [student.emissions, student.transitions]
    if isinstance(student, TokenSoftmax):
        return [student.logits]
    return [student.arc_scores]


def _rebuild(student: Any, scores: list[torch.Tensor]) -> Any:
    if isinstance(student, LinearChainCRF):
        return LinearChainCRF(scores[0], scores[1], student.lengths)
    if isinstance(student, TokenSoftmax):
        return TokenSoftmax(scores[0], student.lengths)
    if isinstance(student, HeadSelection):
        return HeadSelection(scores[0], student.lengths)
    return DependencyCRF(scores[0], student.lengths, projective=False)


CASES = [  # teacher, student, distill.stored (only CRF -> CRF stores otherwise when compact)
    ("crf", "crf", "exact"),
    ("crf", "crf", "compact"),
    ("crf", "maxent", "compact"),
    ("maxent", "crf", "exact"),
    ("maxent", "maxent", "compact"),
    ("span", "crf", "compact"),
    ("span", "maxent", "compact"),
]


@pytest.mark.parametrize(("temperature", "mode"), TEMPERATURES)
@pytest.mark.parametrize(("teacher_kind", "student_kind", "stored"), CASES)
def test_kd_loss_from_the_cache_equals_the_loss_from_the_teacher(
    teacher_kind: str,
    student_kind: str,
    stored: str,
    temperature: float,
    mode: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every NER pair, both settings of ``distill.stored`` where they differ: the per-sentence
    loss from the cache (split into parts of 16 sentences, read per batch) equals the loss from
    the teacher run on the training batch. The teacher ran on other batches when the cache was
    filled, so its scores differ by float32 rounding."""
    monkeypatch.setattr(cache, "PART_SENTENCES", 16)
    teacher = tagger(teacher_kind, seed=1).eval()
    student = tagger(student_kind, seed=2, char_filters=0).eval()
    config = DistillConfig(
        temperature=temperature,
        temperature_mode=mode,  # type: ignore[arg-type]
        stored=stored,  # type: ignore[arg-type]
    )
    corpus = [0] * len(TOKENS)
    distiller = Distiller([teacher], config, TOKENS, corpus, student, tmp_path, ["t"], 5)
    compact = student_kind == "crf" and teacher_kind == "maxent"
    compact |= stored == "compact" and (teacher_kind, student_kind) == ("crf", "crf")
    half = stored == "compact" and teacher_kind == "span"  # float16 marginals
    assert (distiller.form is not None) == (compact or half)
    assert isinstance(distiller.form, HalfMarginals) == half
    headers = [f.read_bytes()[:4096] for f in tmp_path.glob("marginals-*.parts/*.safetensors")]
    assert all((b'"F16"' in h) == half for h in headers)
    assert len(list(tmp_path.glob("marginals-*.parts/*.safetensors"))) == 4  # of 4 batches
    scheme = student.vocab.tag_scheme
    total = 0.0
    for ids in bucket_batches([len(t) for t in TOKENS], 7, seed=3):
        words = [TOKENS[i] for i in ids]
        with torch.no_grad():
            output = student(student.collate(words))
            source = teacher(teacher.collate(words))
            got = distiller.losses(output, student.collate(words), ids)
            expected = kd.structural_kd_loss(source, output, temperature, mode, "none", scheme)
        # float16's rounding moves each loss by less than 1e-3 of itself (issue 16's bound)
        tolerance = 1e-3 if half else 1e-5
        torch.testing.assert_close(got, expected, rtol=tolerance, atol=1e-5)
        total += float(expected.abs().sum())
    assert total > 0


def test_two_teachers_bound_to_corpora_decode_with_their_own_transitions(
    tmp_path: Path,
) -> None:
    teachers = [tagger("crf", seed=1).eval(), tagger("crf", seed=3, lstm_hidden=4).eval()]
    student = tagger("crf", seed=2, char_filters=0).eval()
    corpus = [i % 2 for i in range(len(TOKENS))]
    config = DistillConfig(stored="compact")
    distiller = Distiller(teachers, config, TOKENS, corpus, student, tmp_path, ["a", "b"])
    assert distiller.form is not None
    for ids in bucket_batches([len(t) for t in TOKENS], 6, seed=1, groups=corpus):
        words = [TOKENS[i] for i in ids]
        with torch.no_grad():
            output = student(student.collate(words))
            source = teachers[corpus[ids[0]]](teachers[0].collate(words))
            got = distiller.losses(output, student.collate(words), ids)
            expected = kd.structural_kd_loss(source, output, reduction="none")
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_distiller_marginals_are_the_projected_marginals(tmp_path: Path) -> None:
    """``Distiller.marginals[i]`` rebuilds sentence i's projected marginals from its stored
    emissions; the cache holds 4 L bytes a token, not 4 (L + L^2)."""
    teacher = tagger("crf", seed=1).eval()
    student = tagger("crf", seed=2, char_filters=0).eval()
    corpus = [0] * len(TOKENS)
    config = DistillConfig(stored="compact")
    distiller = Distiller([teacher], config, TOKENS, corpus, student, tmp_path, ["t"])
    assert distiller.marginals is not None and len(distiller.marginals) == len(TOKENS)
    tags = len(student.vocab.tags)
    for i in (0, 7, len(TOKENS) - 1):
        unary, pair = distiller.marginals[i]
        words = [TOKENS[i]]
        with torch.no_grad():
            expected = kd.project(teacher(teacher.collate(words)), student(student.collate(words)))
        torch.testing.assert_close(unary, expected[0][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(pair, expected[1][0], rtol=1e-5, atol=1e-6)
    (data,) = tmp_path.glob("marginals-*.safetensors")
    words = sum(len(t) for t in TOKENS)
    assert data.stat().st_size < words * 4 * tags + 32 * len(TOKENS) + 4096


def test_a_format_1_cache_is_stale_and_rebuilt(tmp_path: Path) -> None:
    """A cache written as before issue 16 (one file of projected marginals, read whole, no
    format in its index, the key without it) is reported stale and rebuilt; the rebuilt one is
    then reused without a warning."""
    teacher = tagger("crf", seed=1).eval()
    student = tagger("crf", seed=2, char_filters=0).eval()
    config = DistillConfig()
    pair = pair_of(teacher, student)
    slot = {"data": data_hash(TOKENS, [0] * len(TOKENS)), "student": pair.slot()}
    key = {"teachers": ["t"], "binding": "corpus", "temperature": 1.0, "temperature_mode": "global"}
    slot_id = hashlib.sha256(json.dumps(slot, sort_keys=True).encode()).hexdigest()[:20]
    old_key = hashlib.sha256(json.dumps({**slot, **key}, sort_keys=True).encode()).hexdigest()
    tensors: dict[str, torch.Tensor] = {"index": torch.tensor([], dtype=torch.long)}
    with torch.no_grad():
        rows = []
        for words in TOKENS:
            parts = pair.project([list(words)], config.temperature, config.temperature_mode)
            rows.append([p[0, : len(words) - (c == 1)].contiguous() for c, p in enumerate(parts)])
    for c in range(2):
        tensors[f"c{c}.data"] = torch.cat([r[c].flatten() for r in rows])
        tensors[f"c{c}.shapes"] = torch.tensor([list(r[c].shape) for r in rows])
    data = tensors_to_bytes(tensors, {"key": old_key, "sentences": str(len(rows))})
    path = tmp_path / f"marginals-{slot_id}.safetensors"
    atomic_write_bytes(path, data)
    meta = {"key": old_key, "sha256": sha256(data), "sentences": len(rows)}
    atomic_write_json(path.with_suffix(".json"), meta)
    with pytest.warns(CacheWarning, match="stale .* format 1, this version reads 2"):
        Distiller([teacher], config, TOKENS, [0] * len(TOKENS), student, tmp_path, ["t"])
    assert json.loads(path.with_suffix(".json").read_text())["format"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        Distiller([teacher], config, TOKENS, [0] * len(TOKENS), student, tmp_path, ["t"])


def _rows(i: int) -> list[torch.Tensor]:
    return [torch.full((i % 4 + 1, 3), float(i)), torch.tensor([float(-i)])]


def test_a_killed_pass_resumes_from_its_last_complete_part(tmp_path: Path) -> None:
    """Killed in its 4th part (of 6 sentences each), a pass rerun computes nothing of the 3
    complete parts; a damaged part is recomputed alone; another key recomputes everything."""
    batches = [[2 * b + 1, 2 * b] for b in range(20)]  # 40 sentences, 20 batches of 2
    computed: list[int] = []
    kill_after = [21]

    def compute(some: list[list[int]]) -> dict[int, list[torch.Tensor]]:
        out = {}
        for ids in some:
            if len(computed) >= kill_after[0]:
                raise KeyboardInterrupt
            computed.extend(ids)
            out.update({i: _rows(i) for i in ids})
        return out

    def fill(key: str = "k") -> Any:
        return cached_marginals(tmp_path, {"s": 1}, {"k": key}, compute, batches, "m", 6)

    with pytest.raises(KeyboardInterrupt):
        fill()
    first = set(computed)
    assert len(first) == 22  # 3 complete parts of 6, and 2 batches of the 4th
    kill_after[0] = 10**9
    computed.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # parts, but no index yet: no warning
        rows = fill()
    assert set(computed) == set(range(18, 40))  # parts 4-7 (sentences of batches 9-19)
    assert len(rows) == 40
    for i in range(40):
        assert all(torch.equal(a, b) for a, b in zip(rows[i], _rows(i)))
    parts = sorted(tmp_path.glob("m-*.parts/*.safetensors"))
    assert len(parts) == 7
    damaged = bytearray(parts[1].read_bytes())
    damaged[-2] ^= 0xFF
    parts[1].write_bytes(bytes(damaged))
    computed.clear()
    with pytest.warns(CacheWarning, match="corrupt"):
        rows = fill()
    assert sorted(computed) == list(range(6, 12))
    assert all(torch.equal(a, b) for i in range(40) for a, b in zip(rows[i], _rows(i)))
    computed.clear()
    with pytest.warns(CacheWarning, match="stale"):
        fill("other")
    assert sorted(computed) == list(range(40))
