"""The CLI's status lines (``ablate._console.LazyConsole.say``) are byte for byte what rich prints:
written directly (no rich imported) only where rich would add nothing, through rich everywhere else
(markup, emoji codes, wrapping at $COLUMNS, a terminal's colours and highlighting)."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from ablate._console import LazyConsole

TEXTS = [
    "",
    "wrote report.html",
    "wrote report.html; 10 of 10 studies unchanged since the last page",
    "wrote 29821 rows to /tmp/a b/x.csv",
    "wrote C:/reports/r.html",
    "wrote [bold]r[/bold].html",  # markup: rich reads it
    r"wrote \[x].html",
    "wrote :thumbs_up: x:y.html",  # an emoji code
    "x" * 79,
    "x" * 80,
    "word " * 30 + "end",  # wraps at 80
    "  leading and trailing  ",
    "tab\there",
    "ünïcode wide 漢字",
    "bell\x07",
]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _rich(text: str, stream: io.StringIO, **kw) -> str:
    Console(stderr=True).print(text, **kw)
    return stream.getvalue()


@pytest.mark.parametrize("columns", [None, "30", "120"])
@pytest.mark.parametrize("options", [{}, {"markup": False, "highlight": False}, {"soft_wrap": True}])
@pytest.mark.parametrize("text", TEXTS)
def test_say_prints_what_rich_prints(monkeypatch: pytest.MonkeyPatch, text: str, columns: str | None,
                                     options: dict) -> None:
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    LazyConsole(stderr=True).say(text, **options)
    got = sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert got == _rich(text, sys.stderr, **options)


def test_say_writes_plain_lines_without_rich_and_defers_to_it_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    c = LazyConsole(stderr=True)
    c.say("wrote report.html; 10 of 10 studies unchanged since the last page")
    assert c._console is None and sys.stderr.getvalue().endswith("last page\n")
    c.say("wrote [bold]x[/bold]")  # markup: rich's
    assert c._console is not None and sys.stderr.getvalue().endswith("wrote x\n")

    # a terminal: rich's colours and highlighting, exactly as before
    for env in ({}, {"FORCE_COLOR": "1"}):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        stream = Tty() if not env else io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        LazyConsole(stderr=True).say("wrote 12 rows to x.csv")
        got = stream.getvalue()
        stream.seek(0)
        stream.truncate()
        assert "\x1b[" in got and got == _rich("wrote 12 rows to x.csv", stream)
