"""Safe file writes: atomic replacement, streaming to devices, temporaries that name their writer.

Every structkd file that must never be seen half-written goes through a temporary file beside
its target, renamed over it once complete (``os.replace``, atomic on POSIX). That is only right
for regular files: a character device (``/dev/null``), a pipe, a socket or ``/dev/stdout`` must be
written to directly, and a symbolic link is written through (its target is replaced, the link
stays). :func:`output_target` makes that choice.

Temporary names end in ``.structkd-PID@HOST.tmp``, so a later run can tell the leftovers of a
killed process (same host, process gone) from those of a process still writing, and remove them
(:func:`clean_stale_temporaries`). Errors while writing are re-raised as an ``OSError`` that names
the target path (a failed ``write`` on a descriptor names none).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

PathLike = str | os.PathLike[str]

_TEMPORARY = re.compile(r"^\..*\.structkd-(\d+)@(.+)\.tmp$")


def host_name() -> str:
    """This machine's name, restricted to characters safe in a file name."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a zombie counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def named_error(error: OSError, path: PathLike) -> OSError:
    """``error`` as an OSError of the same kind whose file name is ``path``.

    ``str()`` of the result reads ``[Errno 28] No space left on device: 'PATH'``.
    """
    message = error.strerror or str(error)
    return OSError(error.errno, message, os.fspath(path)) if error.errno else OSError(message)


def _temporary_name(name: str) -> str:
    return f".{name}.{os.urandom(4).hex()}.structkd-{os.getpid()}@{host_name()}.tmp"


def temporary_file(target: PathLike) -> tuple[int, Path]:
    """Creates an empty temporary file beside ``target``; returns its descriptor and path.

    The file is created with mode 0o666 less the umask (what ``open`` would give ``target``),
    not the 0o600 of ``tempfile.mkstemp``.

    Raises:
        OSError: naming ``target`` (e.g. its directory does not exist or is not writable).
    """
    target = Path(target)
    for _ in range(100):
        path = target.parent / _temporary_name(target.name)
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue
        except OSError as error:
            raise named_error(error, target) from error
    raise FileExistsError(f"{target}: no free temporary name beside it")


def temporary_directory(target: PathLike) -> Path:
    """Creates an empty temporary directory beside ``target`` (mode 0o777 less the umask)."""
    target = Path(target)
    while True:
        path = target.parent / _temporary_name(target.name)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as error:
            raise named_error(error, target) from error


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Writes ``data`` to the regular file ``path`` via a temporary file and ``os.replace``.

    A symbolic link at ``path`` is written through: its target is replaced. The parent directory
    is created if needed. On any failure the previous file is untouched and the temporary removed.

    Raises:
        OSError: naming ``path`` (a full disk, a missing permission).
    """
    target = Path(os.path.realpath(path))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise named_error(error, target.parent) from error
    fd, tmp = temporary_file(target)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise named_error(error, path) from error
        raise


def atomic_write_json(path: PathLike, data: Any) -> None:
    """Writes ``data`` as indented UTF-8 JSON, one trailing newline, via :func:`atomic_write_bytes`.

    Raises:
        OSError: naming ``path``.
    """
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def output_target(path: PathLike) -> tuple[Path, bool]:
    """Where writing to ``path`` really goes, and whether to write it atomically.

    Returns ``(resolved path, atomic)``: symbolic links are resolved; ``atomic`` is True for a
    regular file or a path that does not exist yet, False for anything else: a character device
    such as ``/dev/null``, a pipe, a socket, and any path that is or passes through one of the
    descriptor aliases ``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N`` or ``/proc/...``
    (``/dev/stdout`` may point at a regular file the shell opened, which must not be replaced).
    """
    hop = os.path.abspath(os.fspath(path))
    special = False
    for _ in range(40):  # the kernel's own limit on symbolic links followed
        special = special or _descriptor_alias(hop)
        if not os.path.islink(hop):
            break
        hop = os.path.join(os.path.dirname(hop), os.readlink(hop))
    resolved = os.path.realpath(hop)
    special = special or _descriptor_alias(resolved)
    try:
        mode = os.stat(resolved).st_mode
    except FileNotFoundError:
        return Path(resolved), not special
    except OSError as error:
        raise named_error(error, path) from error
    return Path(resolved), stat.S_ISREG(mode) and not special


def _descriptor_alias(path: str) -> bool:
    if path in ("/dev/stdin", "/dev/stdout", "/dev/stderr"):
        return True
    return any(path == d or path.startswith(d + os.sep) for d in ("/dev/fd", "/proc"))


@contextmanager
def text_output(path: PathLike) -> Iterator[TextIO]:
    """A UTF-8 text stream to ``path``, for writers that stream their output.

    ``-`` is standard output. A regular file (or a new path; symbolic links are written through)
    appears only if the ``with`` block succeeds (temporary file, then ``os.replace``), so a
    failure leaves any previous file untouched. Anything else (``/dev/null``, ``/dev/stdout``, a
    named pipe) is opened for appending and written directly: what was written before a failure
    stays written.

    Raises:
        OSError: naming ``path`` (a missing directory, a full disk, a device that refuses).
    """
    if os.fspath(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target, atomic = output_target(path)
    if not atomic:
        try:  # appending: a descriptor alias keeps what the shell set up (`>>` or `>`)
            handle = open(target, "a", encoding="utf-8", newline="\n")
        except OSError as error:
            raise named_error(error, path) from error
        try:
            with handle:
                yield handle
        except OSError as error:
            if error.filename is None:  # a failed write or flush of this stream
                raise named_error(error, path) from error
            raise
        return
    clean_stale_temporaries(target.parent, target.name, recursive=False)
    fd, tmp = temporary_file(target)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename in (None, os.fspath(tmp)):
            raise named_error(error, path) from error
        raise


def stale_temporary(path: Path) -> bool:
    """Whether ``path`` is a structkd temporary of a process on this host that no longer runs."""
    match = _TEMPORARY.match(path.name)
    return match is not None and match[2] == host_name() and not process_alive(int(match[1]))


def clean_stale_temporaries(
    directory: PathLike, name: str | None = None, recursive: bool = True
) -> list[Path]:
    """Removes the temporary files and directories that killed structkd processes left.

    Only names made by :func:`temporary_file` / :func:`temporary_directory` whose process ran on
    this host and is gone are removed, so it is safe beside running writers (of this or another
    machine sharing the directory). O(entries).

    Args:
        directory: where to look (nothing happens if it does not exist).
        name: only temporaries of this target name (e.g. ``out.conll``).
        recursive: also look in subdirectories (not following symbolic links).

    Returns:
        The paths removed.
    """
    removed: list[Path] = []
    directory = Path(directory)
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if stale_temporary(entry) and (name is None or entry.name.startswith(f".{name}.")):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        elif recursive and entry.is_dir() and not entry.is_symlink():
            removed += clean_stale_temporaries(entry, name, recursive)
    return removed
