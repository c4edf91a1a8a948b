"""Vocabularies: ids, specials, counting, JSON round trip, and the tag order models rely on."""

from __future__ import annotations

import json

import pytest

from structkd.data.vocab import Vocab, tag_vocab
from structkd.structures.tags import SCHEMES, to_spans


class TestVocab:
    def test_ids_specials_first(self) -> None:
        vocab = Vocab(["the", "cat"], unk="<unk>", pad="<pad>")
        assert list(vocab) == ["<pad>", "<unk>", "the", "cat"]
        assert (vocab.pad_index, vocab.unk_index) == (0, 1)
        assert vocab.encode(["cat", "dog", "the"]) == [3, 1, 2]
        assert vocab.decode([3, 2]) == ["cat", "the"]
        assert len(vocab) == 4 and "cat" in vocab and "dog" not in vocab

    def test_without_unk_unknown_raises(self) -> None:
        vocab = Vocab(["a"])
        assert vocab.pad_index is None and vocab.unk_index is None
        with pytest.raises(KeyError, match="'b'"):
            vocab.index("b")
        with pytest.raises(IndexError, match="outside"):
            vocab.string(1)
        with pytest.raises(IndexError):
            vocab.string(-1)

    @pytest.mark.parametrize(
        "entries, unk, pad", [(["a", "a"], None, None), (["<unk>"], "<unk>", None), ([], "x", "x")]
    )
    def test_duplicates_rejected(
        self, entries: list[str], unk: str | None, pad: str | None
    ) -> None:
        with pytest.raises(ValueError, match="duplicate"):
            Vocab(entries, unk=unk, pad=pad)

    def test_build_orders_by_count_then_string(self) -> None:
        corpus = [["b", "a", "c", "a"], ["c", "d", "a", "<unk>"]]
        vocab = Vocab.build(corpus)
        assert list(vocab) == ["<pad>", "<unk>", "a", "c", "b", "d"]
        assert list(Vocab.build(corpus, min_count=2, unk="?", pad=None)) == ["?", "a", "c"]
        assert list(Vocab.build(corpus, max_size=1)) == ["<pad>", "<unk>", "a"]

    def test_json_round_trip(self) -> None:
        for vocab in (
            Vocab(["x", "y"], unk="<unk>", pad="<pad>"),
            Vocab(["é", "ü"]),
            Vocab([], unk="<unk>"),
        ):
            restored = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
            assert restored == vocab
            assert list(restored) == list(vocab)
        assert Vocab(["x"]) != Vocab(["x"], unk="<unk>")

    @pytest.mark.parametrize(
        "data", [{}, {"entries": "ab"}, {"entries": [1]}, {"entries": [], "unk": 3}]
    )
    def test_from_dict_rejects_garbage(self, data: dict[str, object]) -> None:
        with pytest.raises(ValueError, match="vocabulary description"):
            Vocab.from_dict(data)


class TestTagVocab:
    def test_bioes_order(self) -> None:
        vocab = tag_vocab(["PER", "LOC", "ORG", "PER"], "BIOES")
        types = ["LOC", "ORG", "PER"]
        assert vocab.string(0) == "O"
        assert len(vocab) == 1 + 4 * len(types)
        for r, t in enumerate(types):
            assert vocab.index(f"B-{t}") == 1 + 4 * r
            assert vocab.index(f"I-{t}") == 2 + 4 * r
            assert vocab.index(f"E-{t}") == 3 + 4 * r
            assert vocab.index(f"S-{t}") == 4 + 4 * r

    @pytest.mark.parametrize("scheme", ["BIO", "IOB1"])
    def test_bio_order(self, scheme: str) -> None:
        vocab = tag_vocab(["MISC", "LOC"], scheme)
        assert list(vocab) == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
        with pytest.raises(KeyError):
            vocab.index("B-PER")

    def test_every_tag_parses(self) -> None:
        for scheme in SCHEMES:
            for tag in tag_vocab(["A", "B"], scheme):
                to_spans([tag], scheme)

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="unknown tag scheme"):
            tag_vocab(["PER"], "IOBES")
        with pytest.raises(ValueError, match="non-empty"):
            tag_vocab(["PER", ""], "BIO")
