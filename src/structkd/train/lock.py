"""One run per output directory: an exclusive lock file held while a run writes ``OUT``.

Two ``structkd train``/``distill`` processes on the same ``--out`` would interleave their logs,
checkpoints and ``model/``. The first takes ``OUT/.structkd.lock`` with ``flock`` (exclusive, not
blocking) and writes its process id, host and start time into it; a second one fails with a
``RunLockedError`` naming the holder. The kernel drops the lock when its process ends, however it
ends (SIGKILL included), so a lock file left by a dead process is stale: the next run takes it
over and says so. On file systems without ``flock`` the lock falls back to the recorded process
id, which only a process on the same host can check.

On release the lock file is removed, and so is ``OUT`` itself if the run created it and left it
empty (a run that fails a check writes nothing, not even a directory).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
import warnings
from pathlib import Path
from types import TracebackType

from structkd.io.files import host_name, named_error, process_alive

LOCK_NAME = ".structkd.lock"


class RunLockedError(FileExistsError):
    """Another live process holds the output directory's lock."""


class StaleLockWarning(UserWarning):
    """A lock left by a process that no longer runs was taken over."""


def _holder(text: str) -> dict[str, object]:
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, object]) -> str:
    if not holder:
        return "another process (its lock file is empty)"
    since = holder.get("since")
    started = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
        if isinstance(since, (int, float))
        else "?"
    )
    return f"process {holder.get('pid')} on {holder.get('host')} (since {started})"


class RunLock:
    """The exclusive lock of an output directory, as a context manager.

    Args:
        out: the run's output directory (created if missing, removed again on release if the
            run left it empty).
        enabled: False makes the lock a no-op (the ranks > 0 of a distributed run, which share
            rank 0's lock).
    """

    def __init__(self, out: str | os.PathLike[str], enabled: bool = True) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self.enabled = enabled
        self._fd: int | None = None
        self._created: list[Path] = []

    @property
    def held(self) -> bool:
        """Whether this process holds the lock now."""
        return self._fd is not None

    def acquire(self) -> None:
        """Takes the lock.

        Raises:
            RunLockedError: another live process holds it (the message names it).
            OSError: the directory cannot be created or written (naming it).
        """
        if not self.enabled:
            return
        missing = [p for p in (self.out, *self.out.parents) if not p.exists()]
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise named_error(error, self.out) from error
        self._created = missing  # innermost first: the order to remove them in
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:  # a releasing holder removed OUT meanwhile: retry
                self.out.mkdir(parents=True, exist_ok=True)
                continue
            except OSError as error:
                self._remove_created()
                raise named_error(error, self.path) from error
            try:
                if self._lock(fd) and self._same_file(fd):
                    self._take(fd)
                    return
            except BaseException:
                os.close(fd)
                self._remove_created()
                raise
            os.close(fd)  # the file was replaced or removed while we locked it: try again
        self._remove_created()
        raise RunLockedError(f"{self.out}: could not take the lock file {self.path}")

    def _lock(self, fd: int) -> bool:
        """True when this process now holds the lock on ``fd``."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            raise RunLockedError(
                f"{self.out} is in use by {_describe(holder)}: another structkd run writes "
                f"there (lock file {self.path}); wait for it or choose another --out"
            ) from None
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise named_error(error, self.path) from error
            holder = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            pid = holder.get("pid")
            if (
                holder.get("host") == host_name()
                and isinstance(pid, int)
                and pid != os.getpid()
                and process_alive(pid)
            ):
                raise RunLockedError(
                    f"{self.out} is in use by {_describe(holder)} (lock file {self.path})"
                ) from None
        return True

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _take(self, fd: int) -> None:
        old = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        if old:
            warnings.warn(
                f"{self.path}: taking over the stale lock of {_describe(_holder(old))}, "
                "which no longer runs",
                StaleLockWarning,
                3,
            )
        record = {"pid": os.getpid(), "host": host_name(), "since": round(time.time(), 3)}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        except OSError as error:
            raise named_error(error, self.path) from error
        self._fd = fd

    def release(self) -> None:
        """Removes the lock file (before unlocking, so no one locks a removed file), then
        ``OUT`` and the parents this lock created, if empty."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        self._remove_created()

    def _remove_created(self) -> None:
        for directory in self._created:
            try:
                directory.rmdir()
            except OSError:  # not empty (the run wrote there), or already gone
                break
        self._created = []

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()
