"""The CLI's consoles (stdout and stderr), created on first use, and ``say``: one line printed as
rich prints it, without importing rich where the bytes are known without it.

Importing ``rich.console`` is ~0.03-0.05 s of every command; ``ablate table`` and ``export`` write
through ``sys.stdout`` and print at most one status line, ``dashboard --out`` one line. A line that
goes to a file or a pipe (no terminal: rich adds no colour and no highlighting), has no markup or
emoji code to read, and is shorter than any width rich could wrap it at, is exactly ``text + "\\n"``
in rich's output: ``say`` writes that. Any other line, and everything on a terminal (colours,
highlighting), goes through rich as before. tests/test_console.py compares the two.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_WIDTH = 80  # rich's width when nothing says otherwise (not a terminal, no COLUMNS)
_STD_FDS = (0, 1, 2)


class LazyConsole:
    """A ``rich.console.Console(**kwargs)`` made on the first attribute asked of it (``print``,
    ``print_json`` ...); ``console`` is the Console itself (for code that takes one)."""

    def __init__(self, **kwargs: Any):
        self._kwargs = kwargs
        self._console: Any = None

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._kwargs)
        return self._console

    def __getattr__(self, name: str) -> Any:  # only for names not found on this object
        return getattr(self.console, name)

    def _stream(self) -> Any:
        return sys.stderr if self._kwargs.get("stderr") else sys.stdout

    def say(self, text: str, **kwargs: Any) -> None:
        """``self.print(text, **kwargs)``, written directly where that gives the same bytes (``plain_ok``)."""
        if self._console is None and set(self._kwargs) <= {"stderr"} and plain_ok(text, self._stream()):
            stream = self._stream()
            stream.write(text + "\n")
            stream.flush()
            return
        self.console.print(text, **kwargs)


def plain_ok(text: str, stream: Any) -> bool:
    """Whether rich's ``Console().print(text)`` to ``stream`` writes exactly ``text`` and a newline,
    whatever its ``markup``, ``highlight`` and ``emoji`` options: ``stream`` is no terminal by rich's
    own rules (``Console.is_terminal``: TTY_COMPATIBLE, FORCE_COLOR, isatty; no colour, so no
    highlighting either), ``text`` is printable ASCII with no ``[`` (markup) and at most one ``:``
    (an emoji code is ``:name:``), and it is shorter than every width rich may wrap at (80, $COLUMNS,
    the size of a terminal on fd 0, 1 or 2)."""
    if not (text.isascii() and text.isprintable() and "[" not in text and text.count(":") < 2
            and text == text.strip() and len(text) < _WIDTH):
        return False
    env = os.environ
    if "TTY_COMPATIBLE" in env or "FORCE_COLOR" in env or "JUPYTER_COLUMNS" in env:
        return False
    if hasattr(sys.stdin, "__module__") and str(sys.stdin.__module__).startswith("idlelib"):
        return False
    if stream is None:
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        if isatty is None or isatty():
            return False
    except ValueError:
        return False
    columns = env.get("COLUMNS")
    if columns is not None and columns.isdigit() and len(text) >= int(columns):
        return False
    for fd in _STD_FDS:
        try:
            width = os.get_terminal_size(fd).columns
        except (AttributeError, ValueError, OSError):
            continue
        if width and len(text) >= width:
            return False
    return True
