"""Untrusted text (study files, the result database) made safe for where it is shown.

A description, value or error message is data: on a terminal it must not move the cursor, set the
window title or recolour the screen, in Markdown it must not become HTML or split a table cell,
and nowhere may it be read as rich console markup. These helpers do only that, so every printer
can call them without thinking about where the text came from.
"""

from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.text import Text

# ESC-introduced sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), other two-byte escapes;
# then the C1 controls (incl. the one-byte CSI U+009B), C0 controls but \n and \t, DEL; and the
# bidirectional overrides that make a terminal or editor show text in another order than it is.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, terminated by BEL or ST (or not at all)
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[ -/]*[0-~]?"  # any other escape
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
)
_SURROGATES = re.compile(r"[\ud800-\udfff]")
_TAG_OPEN = re.compile(r"<(?=[A-Za-z/!?])")


def strip_controls(s: object, keep_newlines: bool = True) -> str:
    """``s`` as text without terminal control sequences or lone surrogates (shown as U+FFFD).
    Newlines and tabs stay unless ``keep_newlines`` is false (then they become spaces)."""
    s = str(s)
    if s.isprintable():  # no control, format (bidi) or surrogate character, no line break: nothing to do
        return s
    if keep_newlines and s.replace("\n", "").replace("\t", "").isprintable():
        return s  # only line breaks and tabs, which stay (every pattern below starts with a non-printable)
    s = _SURROGATES.sub("\ufffd", _ESCAPES.sub("", s))
    return s if keep_newlines else s.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")


def plain(s: object, style: str = "") -> Text:
    """A rich ``Text`` of untrusted ``s``: printed as is, never parsed as ``[markup]``. (rich is
    imported here: a table written as CSV or Markdown, or the dashboard's page, needs none of it.)"""
    from rich.text import Text

    return Text(strip_controls(s), style=style)


def markdown_cell(s: object) -> str:
    """``s`` for a Markdown table cell: HTML characters escaped (``<b>`` shows as text), pipes
    escaped, line breaks and control sequences removed so the row stays one row."""
    s = strip_controls(s, keep_newlines=False)
    # "<" opens HTML only before a tag's first character (a letter, /, ! or ?); elsewhere ("n<3") it
    # stays as it is, and so does ">" (no tag without "<"), so a table printed to a terminal reads as written
    s = s.replace("&", "&amp;").replace("|", r"\|")
    return _TAG_OPEN.sub("&lt;", s) if "<" in s else s


def header_safe(s: object, limit: int = 200) -> str:
    """``s`` fit for an HTTP status line or header: printable ASCII only, bounded length."""
    return "".join(ch for ch in str(s) if " " <= ch <= "~")[:limit]


# -- table format strings ------------------------------------------------------------------------
MAX_FORMAT_LENGTH = 200
MAX_FORMAT_WIDTH = 64
MAX_FORMAT_PRECISION = 20
# the format-spec mini-language: [[fill]align][sign][z][#][0][width][grouping][.precision][type]
_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<precision>\d*))?[bcdeEfFgGnosxX%]?",
                   re.DOTALL)


def format_problem(fmt: str) -> str | None:
    """Why ``fmt`` is not a safe format of one value ``v`` (or 'human'), or None.

    Only the field ``v`` (no attribute or index access, no nested fields), a format spec of the
    mini-language with width <= 64 and precision <= 20, no control characters, at most 200
    characters: a format from a study file or the database cannot read attributes, allocate
    gigabytes (``{v:>200000000}``) or put a line break into a table, a terminal or an HTTP response."""
    if fmt == "human":
        return None
    if not isinstance(fmt, str):
        return "a string"
    if len(fmt) > MAX_FORMAT_LENGTH:
        return f"at most {MAX_FORMAT_LENGTH} characters"
    if any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in fmt):
        return "no control characters or line breaks"
    try:
        parts = list(string.Formatter().parse(fmt))
    except ValueError as e:
        return f"a valid Python format ({e})"
    fields = 0
    for _, field, spec, conv in parts:
        if field is None:
            continue
        fields += 1
        if field != "v":
            return f"only the field {{v}}, got {{{field}}}"
        if conv not in (None, "s", "r"):
            return f"conversion !s or !r, got !{conv}"
        spec = spec or ""
        m = _SPEC.fullmatch(spec)
        if "{" in spec or not m:
            return f"a format spec like '.2f' or '>6', got ':{spec}'"
        if m.group("width") and int(m.group("width")) > MAX_FORMAT_WIDTH:
            return f"a width of at most {MAX_FORMAT_WIDTH}, got {int(m.group('width'))}"
        if m.group("precision") and int(m.group("precision")) > MAX_FORMAT_PRECISION:
            return f"a precision of at most {MAX_FORMAT_PRECISION}, got {int(m.group('precision'))}"
    if fields == 0:
        return "a format with the field {v} (e.g. '{v}x{v}', '{v:.2f}') or 'human'"
    return None


def safe_format(fmt: str | None, value: Any, default: str = "{v}") -> str:
    """``fmt.format(v=value)`` when ``fmt`` is safe (``format_problem``) and applies to ``value``,
    else ``default``'s: a bad format stored in a database renders plainly instead of crashing a
    table, a dashboard or a server, and never allocates what its width asks for."""
    if fmt and format_problem(fmt) is None:
        try:
            return fmt.format(v=value)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            pass
    return default.format(v=value)


def human(n: float, unit: str = "") -> str:
    """4.0M / 15.3G style, the paper's rounding to one decimal."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}{unit}"
    return f"{n:.0f}{unit}"
