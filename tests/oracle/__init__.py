"""The tests' oracle: brute-force enumeration of every output of tiny sentences (tag sequences,
span sets, head selections, projective and non-projective trees, sibling factors), and the
registry of structures checked against it (``CASES``, one ``Case`` per structure)."""

from oracle.cases import CASES, SEEDS, Case, Potentials
from oracle.spans import SpanSet, count_span_sets, span_sets
from oracle.tags import Tags, tag_sequences
from oracle.trees import (
    Heads,
    best_tree_score,
    head_assignments,
    is_projective,
    is_projective_by_descendants,
    is_tree,
    reaches_root,
    sibling_pairs,
    tree_array,
    trees,
)

__all__ = [
    "CASES",
    "SEEDS",
    "Case",
    "Heads",
    "Potentials",
    "SpanSet",
    "Tags",
    "best_tree_score",
    "count_span_sets",
    "head_assignments",
    "is_projective",
    "is_projective_by_descendants",
    "is_tree",
    "reaches_root",
    "sibling_pairs",
    "span_sets",
    "tag_sequences",
    "tree_array",
    "trees",
]
