"""Data layer: readers and writers (CoNLL, WikiAnn, plain text), tag schemes, vocabularies."""

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
from structkd.data.tags import (
    SCHEMES,
    Span,
    convert,
    detect_scheme,
    entity_types,
    from_spans,
    parse_tag,
    to_spans,
)
from structkd.data.vocab import Vocab, tag_vocab

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
