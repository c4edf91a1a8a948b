"""Dependency models: every parser kind trains, saves, loads and decodes well-formed trees; losses
against hand computations; the triaffine scorer against a loop."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from structkd.config import EncoderConfig, ModelConfig, ParserConfig
from structkd.data.conllu import DepSentence, read_conllu, read_malttab
from structkd.data.trees import is_tree
from structkd.models.base import predict_sentences as predict_trees
from structkd.models.checkpoint import load_model, save_model
from structkd.models.depbase import DepModel
from structkd.models.parser import BiaffineParser
from structkd.models.seqlabel import SeqLabelParser
from structkd.nn.layers import Triaffine
from structkd.structures.sibling import SiblingDependencyCRF
from structkd.tasks import get_task

FIXTURES = Path(__file__).parent / "fixtures" / "dep"
EWT = read_conllu(FIXTURES / "en_ewt-dev-slice.conllu")
TASK = get_task("dep")
KINDS = [
    ("head_selection", "mfvi"),
    ("projective", "mfvi"),
    ("nonprojective", "mfvi"),
    ("sibling", "mfvi"),
    ("sibling", "exact"),
    ("seqlabel", "mfvi"),
]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(kind: str, inference: str = "mfvi") -> ModelConfig:
    encoder = EncoderConfig(word_dim=8, char_dim=4, char_filters=6, lstm_hidden=6, dropout=0.0)
    parser = ParserConfig(kind, inference, arc_dim=8, rel_dim=4, sib_dim=4)  # type: ignore[arg-type]
    return ModelConfig(encoder, parser=parser)


def trained(kind: str, inference: str = "mfvi", sentences: list[DepSentence] = EWT) -> DepModel:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-projective training trees, tested below
        model = TASK.build_model(tiny(kind, inference), sentences)
    assert isinstance(model, DepModel)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    batch = TASK.collate(model, sentences[:10])
    for _ in range(3):
        loss = model.nll(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize(("kind", "inference"), KINDS)
def test_train_save_load_predict_trees(kind: str, inference: str, tmp_path: Path) -> None:
    model = trained(kind, inference)
    words = [s.words for s in EWT]
    before = predict_trees(model, words)
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert predict_trees(loaded, words) == before  # type: ignore[arg-type]
    for (heads, rels), sentence in zip(before, EWT):
        assert is_tree(heads) and len(heads) == len(sentence)
        assert rels is not None and all(r in model.vocab.rels or r == "_" for r in rels)
    # Batches of different padding give the same trees (and the same log Z where exact).
    assert [predict_trees(model, [w])[0] for w in words[:6]] == before[:6]
    structure = model.structure(model.collate(words[:6]))
    if not (isinstance(structure, SiblingDependencyCRF) and inference == "mfvi"):
        single = model.structure(model.collate(words[3:4]))
        assert torch.allclose(structure.log_partition[3], single.log_partition[0], atol=1e-4)


def test_student_decodes_well_formed_trees_from_any_scores() -> None:
    """Large random label scores (far from any tree) still decode into single-root trees."""
    model = trained("seqlabel")
    assert isinstance(model, SeqLabelParser)
    words = [s.words for s in EWT]
    for seed in range(4):
        torch.manual_seed(seed)
        with torch.no_grad():
            model.scorer.weight.normal_(0, 3.0)
            model.scorer.bias.normal_(0, 3.0)
        for heads, rels in predict_trees(model, words):
            assert is_tree(heads, single_root=True) and rels is not None
    selection = trained("head_selection")
    assert isinstance(selection, BiaffineParser)
    with torch.no_grad():
        selection.arc.weight.normal_(0, 3.0)
    output = selection(selection.collate(words))
    greedy = output.structure.argmax  # each word's best head: usually not a tree
    assert any(not is_tree(row[1 : n + 1].tolist()) for row, n in zip(greedy, map(len, words)))
    assert all(is_tree(heads) for heads, _ in predict_trees(selection, words))


def test_parser_loss_by_hand() -> None:
    """Head selection: -log softmax of the gold head + relation cross-entropy at the gold arc;
    a projective CRF skips the arc loss of a non-projective gold tree."""
    model = trained("head_selection")
    assert isinstance(model, BiaffineParser)
    sentence = EWT[0]
    batch = model.collate([sentence.words], [(sentence.heads, sentence.rels)])
    output = model(batch)
    assert output.rel_scores is not None
    expected = torch.zeros(())
    for d, (head, rel) in enumerate(zip(sentence.heads, sentence.rels or []), start=1):
        arcs = output.structure.arc_scores[0, d, : len(sentence) + 1].clone()
        arcs[d] = float("-inf")
        expected -= torch.log_softmax(arcs, -1)[head]
        rel_id = model.vocab.rels.index(rel)
        expected -= torch.log_softmax(output.rel_scores[0, d, head], -1)[rel_id]
    assert torch.allclose(model.nll(batch, output)[0], expected, atol=1e-4)
    unlabeled = model.collate([sentence.words], [None])
    assert model.nll(unlabeled)[0] == 0

    crf = trained("projective")
    assert isinstance(crf, BiaffineParser)
    crossing = next(s for s in EWT if not batch_projective(crf, s))
    gold = crf.collate([crossing.words], [(crossing.heads, crossing.rels)])
    no_rels = crf.collate([crossing.words], [(crossing.heads, None)])
    assert crf.nll(no_rels)[0] == 0  # neither arc loss (non-projective) nor relation loss
    assert crf.nll(gold)[0] > 0


def batch_projective(model: DepModel, sentence: DepSentence) -> bool:
    batch = model.collate([sentence.words], [(sentence.heads, sentence.rels)])
    assert batch.projective is not None
    return bool(batch.projective[0])


def test_mean_field_loss_is_head_cross_entropy() -> None:
    model = trained("sibling", "mfvi")
    assert isinstance(model, BiaffineParser)
    sentence = EWT[1]
    batch = model.collate([sentence.words], [(sentence.heads, None)])
    output = model(batch)
    q = output.structure.marginals[0]
    expected = -sum(q[d, h].log() for d, h in enumerate(sentence.heads, start=1))
    assert torch.allclose(model.nll(batch, output)[0], expected, atol=1e-4)


def test_seqlabel_gold_labels_and_loss() -> None:
    model = trained("seqlabel")
    assert isinstance(model, SeqLabelParser)
    sentence = EWT[0]  # From the AP comes this story :
    batch = model.collate([sentence.words], [(sentence.heads, sentence.rels)])
    assert batch.labels is not None
    names = [model.vocab.labels[i] for i in batch.labels[0].tolist()]
    assert names == ["+2@case", "+1@det", "+1@obl", "ROOT@root", "+1@det", "-2@nsubj", "-3@punct"]
    logits = model(batch).structure.logits[0]  # type: ignore[attr-defined]
    expected = -torch.log_softmax(logits, -1).gather(-1, batch.labels[0][:, None]).sum()
    assert torch.allclose(model.nll(batch)[0], expected, atol=1e-4)


def test_unlabeled_treebank_gives_unlabeled_parsers() -> None:
    wsj = read_malttab(FIXTURES / "wsj-slice.malttab")
    for kind in ("projective", "seqlabel"):
        model = trained(kind, sentences=wsj)
        assert model.vocab.rels == []
        trees = predict_trees(model, [s.words for s in wsj])
        assert all(rels is None and is_tree(heads) for heads, rels in trees)
    assert model.vocab.labels and all("@" not in label for label in model.vocab.labels)


def test_triaffine_matches_its_definition() -> None:
    torch.manual_seed(0)
    layer = Triaffine(3)
    with torch.no_grad():
        layer.weight.normal_()
    x, y, z = torch.randn(3, 2, 4, 3).unbind(0)
    ones = torch.ones(2, 4, 1)
    x1, y1, z1 = (torch.cat([t, ones], -1) for t in (x, y, z))
    scores = layer(x, y, z)
    for b, i, j, k in [(0, 0, 1, 2), (1, 3, 3, 0), (1, 2, 0, 1)]:
        expected = torch.einsum("p,pqr,q,r->", x1[b, i], layer.weight, y1[b, j], z1[b, k])
        assert torch.allclose(scores[b, i, j, k], expected, atol=1e-5)


def test_non_projective_training_trees_are_reported() -> None:
    with pytest.warns(UserWarning, match="3 of 33 training trees are non-projective"):
        TASK.build_model(tiny("projective"), EWT)
