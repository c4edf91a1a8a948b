"""Access to the data files bundled with the package (the WikiAnn demo slice, unlabeled text).

See ``structkd/resources/README.md`` for what they are, where they come from and their licences.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path, PurePosixPath

WIKIANN_EN = ("wikiann_en/train.tsv", "wikiann_en/dev.tsv", "wikiann_en/test.tsv")
"""Resource names of the bundled English WikiAnn slice: train, dev, test."""

UNLABELED_EN = "unlabeled_en.txt"
"""Resource name of the bundled unlabeled English sentences (one per line, tokenized)."""


def resource_path(name: str) -> Path:
    """The filesystem path of a bundled resource, e.g. ``resource_path("wikiann_en/dev.tsv")``.

    Args:
        name: a ``/``-separated path relative to ``structkd/resources``.

    Raises:
        ValueError: for an absolute name or one that climbs out with ``..``.
        FileNotFoundError: if no such resource is bundled.
    """
    parts = PurePosixPath(name).parts
    if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
        raise ValueError(f"resource name {name!r} must be a relative path inside the package")
    target = files("structkd").joinpath("resources", *parts)
    if not target.is_file():
        raise FileNotFoundError(f"no bundled resource {name!r}")
    # The package is installed as plain files (setuptools never zips it), so the resource
    # is already a real path.
    return Path(str(target))


RESOURCE_PREFIX = "resource:"
"""A data path starting with this names a bundled resource (``resource:wikiann_en/dev.tsv``)."""


def resolve_path(path: str) -> Path:
    """A data path; ``resource:NAME`` names a file bundled with structkd.

    Raises:
        FileNotFoundError: if the file does not exist.
    """
    if path.startswith(RESOURCE_PREFIX):
        return resource_path(path[len(RESOURCE_PREFIX) :])
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return Path(path)
