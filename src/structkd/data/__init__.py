"""Data layer, by format: NER corpora (CoNLL, WikiAnn, plain text: ``conll``), treebanks
(CoNLL-U, CoNLL-X, MaltTab: ``conllu``), tag schemes (``tags``), tree checks (``trees``),
punctuation (``punct``), the relative-head label codec (``deplabels``), vocabularies and
length-bucketed batching. The names below are the NER reader's; import the treebank names from
their modules (``conllu.detect_format`` is not ``conll.detect_format``).
"""

from structkd.data.conll import (
    FORMATS,
    Sentence,
    detect_format,
    iter_conll,
    iter_sentences,
    iter_text,
    iter_wikiann,
    read_conll,
    read_ner,
    read_text,
    read_wikiann,
    write_conll,
)
from structkd.data.errors import DataError
from structkd.data.resources import UNLABELED_EN, WIKIANN_EN, resource_path
from structkd.data.vocab import Vocab, tag_vocab
from structkd.structures.tags import (
    SCHEMES,
    Span,
    convert,
    detect_scheme,
    entity_types,
    from_spans,
    parse_tag,
    to_spans,
)

__all__ = [
    "FORMATS",
    "SCHEMES",
    "UNLABELED_EN",
    "WIKIANN_EN",
    "DataError",
    "Sentence",
    "Span",
    "Vocab",
    "convert",
    "detect_format",
    "detect_scheme",
    "entity_types",
    "from_spans",
    "iter_conll",
    "iter_sentences",
    "iter_text",
    "iter_wikiann",
    "parse_tag",
    "read_conll",
    "read_ner",
    "read_text",
    "read_wikiann",
    "resource_path",
    "tag_vocab",
    "to_spans",
    "write_conll",
]
