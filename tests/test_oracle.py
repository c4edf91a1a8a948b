"""The oracle's enumerators against closed-form counts and each other (tests/oracle)."""

from __future__ import annotations

from oracle import (
    count_span_sets,
    head_assignments,
    is_projective,
    is_projective_by_descendants,
    span_sets,
    tag_sequences,
    tree_array,
    trees,
)


def test_tree_counts_match_cayley() -> None:
    # Trees on n+1 labeled nodes rooted at 0: (n+1)^(n-1); with one root child: n^(n-1).
    for n in range(1, 6):
        assert len(tree_array(n, False)) == (n + 1) ** (n - 1)
        assert len(tree_array(n, True)) == n ** (n - 1)


def test_projective_trees_by_crossing_arcs_and_by_descendants_agree() -> None:
    """The oracle filters projective trees by crossing arcs; the descendant definition keeps the
    same ones. Counts: C(3n, n) / (2n + 1) with several root children (OEIS A001764) and
    C(3n - 2, n - 1) / n with one (OEIS A006013)."""
    multi, single = [], []
    for n in range(1, 6):
        for tree in trees(n, projective=False, multiroot=True):
            assert is_projective(tree) == is_projective_by_descendants(tree), tree
        multi.append(len(trees(n, projective=True, multiroot=True)))
        single.append(len(trees(n, projective=True, multiroot=False)))
    assert multi == [1, 3, 12, 55, 273]
    assert single == [1, 2, 7, 30, 143]


def test_head_assignments_and_tag_sequences_are_all_distinct_choices() -> None:
    for n in range(5):
        heads = head_assignments(n)
        assert len(heads) == len(set(heads)) == n**n
        assert all(h != d for y in heads for d, h in enumerate(y, start=1))
        tags = tag_sequences(n, 3)
        assert len(tags) == len(set(tags)) == 3**n


def test_span_sets_are_distinct_non_overlapping_and_counted_in_closed_form() -> None:
    for n_types in (1, 2, 3):
        for n in range(5):
            sets = span_sets(n, n_types)
            assert len(sets) == len(set(sets)) == count_span_sets(n, n_types)
            for y in sets:
                covered = [t for i, j, _ in y for t in range(i, j + 1)]
                assert len(covered) == len(set(covered)) and all(0 <= t < n for t in covered)
