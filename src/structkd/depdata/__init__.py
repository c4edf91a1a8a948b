"""Dependency treebank I/O, punctuation masks, tree checks and the sequence-labeling view of
dependency parsing used to distill a graph-based parser into a tagger."""

from structkd.depdata.conllu import (
    FORMATS,
    DataError,
    DepSentence,
    detect_format,
    format_conllu,
    iter_dep,
    read_conllu,
    read_conllx,
    read_dep,
    read_malttab,
    write_conllu,
)
from structkd.depdata.punct import PTB_PUNCT_TAGS, is_punctuation, non_punct_mask, punct_mask
from structkd.depdata.seqlabel import (
    ROOT_LABEL,
    arc_marginals_to_label_marginals,
    arc_scores_to_label_scores,
    decode_labels,
    decode_scores,
    encode_relative,
    format_label,
    label_arc_scores,
    parse_label,
)
from structkd.depdata.trees import find_cycles, is_projective, is_tree

__all__ = [
    "FORMATS",
    "PTB_PUNCT_TAGS",
    "ROOT_LABEL",
    "DataError",
    "DepSentence",
    "arc_marginals_to_label_marginals",
    "arc_scores_to_label_scores",
    "decode_labels",
    "decode_scores",
    "detect_format",
    "encode_relative",
    "find_cycles",
    "format_conllu",
    "format_label",
    "is_projective",
    "is_punctuation",
    "is_tree",
    "iter_dep",
    "label_arc_scores",
    "non_punct_mask",
    "parse_label",
    "punct_mask",
    "read_conllu",
    "read_conllx",
    "read_dep",
    "read_malttab",
    "write_conllu",
]
