"""Bundled data: present, as described in its README, and exact slices of the shared corpora."""

from __future__ import annotations

import hashlib
import re

import pytest

from structkd.data.resources import UNLABELED_EN, WIKIANN_EN, resource_path

from shared_data import shared_file

ALL = [*WIKIANN_EN, UNLABELED_EN]


def test_resource_path() -> None:
    for name in ALL:
        assert resource_path(name).is_file()
    with pytest.raises(FileNotFoundError, match="no bundled resource 'nope.txt'"):
        resource_path("nope.txt")
    for bad in ("../data/conll.py", "/etc/passwd", ""):
        with pytest.raises(ValueError, match="relative path inside the package"):
            resource_path(bad)


def test_readme_states_sizes_and_hashes() -> None:
    readme = resource_path("README.md").read_text(encoding="utf-8")
    total = 0
    for name in ALL:
        data = resource_path(name).read_bytes()
        total += len(data)
        assert hashlib.sha256(data).hexdigest() in readme, name
        assert f"{len(data):,}" in readme, name
    assert total < 1_500_000
    assert re.search(r"CC BY-SA 4\.0", readme) and re.search(r"CC BY-NC-SA 4\.0", readme)


@pytest.mark.parametrize(
    "name, shared",
    [
        ("wikiann_en/train.tsv", "ner/wikiann-en/train.tsv"),
        ("wikiann_en/dev.tsv", "ner/wikiann-en/dev.tsv"),
        ("wikiann_en/test.tsv", "ner/wikiann-en/test.tsv"),
        ("unlabeled_en.txt", "unlabeled/en.txt"),
    ],
)
def test_slices_are_prefixes_of_the_shared_files(name: str, shared: str) -> None:
    bundled = resource_path(name).read_bytes()
    with shared_file(shared).open("rb") as f:
        assert f.read(len(bundled)) == bundled
