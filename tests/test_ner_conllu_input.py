"""A CoNLL-U treebank given to an NER tagger (``predict``, unlabeled text for distillation): its
format is detected and its words (the FORM column) are read; comment lines, multiword-token
ranges and empty nodes are not tagged as sentences or words."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from structkd.config import ModelConfig
from structkd.data.conll import detect_format, iter_sentences
from structkd.data.errors import DataError
from structkd.models.tagger import build_tagger
from structkd.tasks import get_task

ROOT = Path(__file__).parent.parent
EWT = ROOT / "tests" / "fixtures" / "dep" / "en_ewt-dev-slice.conllu"

TREEBANK = (
    "# sent_id = 1\n"
    "# text = I don't know.\n"
    "1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_\n"
    "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_\n"
    "3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_\n"
    "3.1\tknows\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No\n"
    "5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_\n"
    "\n"
    "# sent_id = 2\n"
    "1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_\n"
)


def _forms(path: Path) -> list[list[str]]:
    """The FORM column of each sentence's word lines, read by hand (the oracle)."""
    sentences, words = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if words:
                sentences.append(words)
            words = []
        elif not line.startswith("#") and line.split("\t")[0].isdigit():
            words.append(line.split("\t")[1])
    return sentences + ([words] if words else [])


def test_a_treebank_is_detected_and_its_words_read(tmp_path: Path) -> None:
    path = tmp_path / "t.conllu"
    path.write_text(TREEBANK, encoding="utf-8")
    assert detect_format(path) == detect_format(EWT) == "conllu"
    got = [s.tokens for s in iter_sentences(path)]
    assert got == [["I", "do", "n't", "know", "."], ["Yes"]]
    assert all(s.tags is None for s in iter_sentences(path))
    assert [s.tokens for s in iter_sentences(EWT)] == _forms(EWT)
    assert [s.line for s in iter_sentences(path)] == [3, 12]


def test_a_tagger_predicts_the_words_of_a_treebank(tmp_path: Path) -> None:
    """One output line per syntactic word: no ``#`` line is tagged as a sentence."""
    tagger = build_tagger(ModelConfig(), [["Paris", "is", "nice"]], [["B-LOC", "O", "O"]])
    out = io.StringIO()
    count = get_task("ner").predict_file(tagger, str(EWT), "auto", out)
    blocks = [b.splitlines() for b in out.getvalue().strip("\n").split("\n\n")]
    assert count == len(blocks) == len(_forms(EWT))
    assert [[line.split(" ")[0] for line in b] for b in blocks] == _forms(EWT)
    assert not any(line.startswith("#") for b in blocks for line in b)


def test_a_broken_treebank_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.conllu"
    path.write_text(TREEBANK.replace("4\tknow\tknow", "4\tknow know"), encoding="utf-8")
    with pytest.raises(DataError, match=r":8: expected a CoNLL-U line of 10 tab-separated fields"):
        list(iter_sentences(path, "conllu"))


def test_a_malttab_treebank_gives_its_words_as_unlabeled_sentences(tmp_path: Path) -> None:
    path = tmp_path / "wsj.malttab"
    path.write_text(
        "Pierre\tNNP\t2\nVinken\tNNP\t0\n\nIt\tPRP\t2\nrose\tVBD\t0\n.\t.\t2\n", encoding="utf-8"
    )
    assert detect_format(path) == "malttab"
    got = list(get_task("ner").iter_unlabeled(str(path)))
    assert [s.tokens for s in got] == [["Pierre", "Vinken"], ["It", "rose", "."]]
    assert all(s.tags is None for s in got)
    assert [s.line for s in iter_sentences(path)] == [1, 4]


def test_a_malformed_malttab_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.malttab"
    path.write_text("Pierre\tNNP\t2\nVinken NNP 0\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.malttab.*2|2.*bad\.malttab"):
        list(iter_sentences(path))
