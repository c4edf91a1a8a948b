"""The one exception type of the data layer: a problem in an input file, located by line."""

from __future__ import annotations

import os


class DataError(ValueError):
    """An input file that cannot be read as asked, with the place of the problem.

    ``str(e)`` is ``"{path}:{line}: {message}"`` (the form compilers and linters use, so editors
    can jump to it), or ``"{path}: {message}"`` when the problem has no single line (an empty
    file, an unreadable path). The CLI prints ``error: {e}`` and exits with status 2.

    Attributes:
        path: the file, as given by the caller (a string).
        line: 1-based line number, or None.
        message: what is wrong, without the location.
    """

    def __init__(self, path: str | os.PathLike[str], message: str, line: int | None = None):
        self.path = os.fspath(path)
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"

    def __reduce__(self) -> tuple[type[DataError], tuple[str, str, int | None]]:
        # Keeps the attributes when the error crosses a process boundary (DataLoader workers).
        return (DataError, (self.path, self.message, self.line))
