"""SHA-256 digests of every file of a model directory or training checkpoint, checked on load.

``manifest.json`` lists each file (its path relative to the directory) with its SHA-256: the
weights, ``config.json`` (model config, labels, vocabularies), ``transformer/`` files and, in a
checkpoint, ``optimizer.safetensors`` and ``state.json``. It is written last, after every file it
lists, so a directory whose manifest is complete holds exactly what was saved; a changed,
truncated or missing file (a flipped label, a swapped vocabulary word, damaged optimizer values)
is reported naming that file. Files whose names start with a dot (temporaries) are not listed.

Directories saved before manifests existed load with a ``ManifestWarning`` (only the weights'
SHA-256 in ``config.json`` is checked there), so existing models keep working.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from structkd.io import file_sha256

MANIFEST = "manifest.json"
FORMAT = "structkd-manifest"


class ManifestError(ValueError):
    """A file of a model directory or checkpoint differs from its manifest."""


class ManifestWarning(UserWarning):
    """A model directory or checkpoint has no manifest (saved by an older structkd)."""


def listed_files(directory: Path) -> list[str]:
    """Every regular file under ``directory`` but the manifest and dot-files, as relative
    POSIX paths, sorted."""
    names = []
    for path in directory.rglob("*"):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts) or str(relative) == MANIFEST:
            continue
        if path.is_file():
            names.append(relative.as_posix())
    return sorted(names)


def manifest_bytes(directory: str | Path) -> bytes:
    """The manifest of ``directory`` as it is now (to be written as ``manifest.json``)."""
    directory = Path(directory)
    files = {name: file_sha256(directory / name) for name in listed_files(directory)}
    record = {"format": FORMAT, "version": 1, "files": files}
    return (json.dumps(record, indent=1) + "\n").encode("utf-8")


def verify_manifest(
    directory: str | Path, strict_under: tuple[str, ...] = ("transformer",)
) -> None:
    """Checks every file ``manifest.json`` lists against its SHA-256.

    Files that are not listed are ignored, except under ``strict_under`` (``transformer/``,
    whose every file the tokenizer and model loaders may read). O(bytes of the listed files).

    Raises:
        ManifestError: naming the manifest (unreadable) or the first file that is missing,
            changed or not listed.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.exists():
        warnings.warn(
            f"{directory}: no {MANIFEST} (saved by an older structkd): only the weights' "
            "checksum is checked",
            ManifestWarning,
            3,
        )
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        files = record["files"]
        if record.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError("not a structkd manifest")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise ValueError("file names and digests must be strings")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ManifestError(f"{path}: unreadable manifest ({error})") from error
    for name, digest in sorted(files.items()):
        target = directory / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise ManifestError(f"{path}: lists a file outside its directory: {name!r}")
        if not target.is_file():
            raise ManifestError(f"{target}: missing (listed in {MANIFEST})")
        try:
            actual = file_sha256(target)
        except OSError as error:
            raise ManifestError(f"{target}: unreadable ({error})") from error
        if actual != digest:
            raise ManifestError(
                f"{target}: SHA-256 differs from {MANIFEST} (the file was changed or damaged "
                "after it was saved)"
            )
    for name in listed_files(directory):
        if name not in files and name.split("/")[0] in strict_under:
            raise ManifestError(f"{directory / name}: not listed in {MANIFEST}")
