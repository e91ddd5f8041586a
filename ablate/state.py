"""ablate's state folder on this machine: journals, the local Ray head's record and its caches.

``$ABLATE_STATE_DIR``, else ``$XDG_CACHE_HOME/ablate``, else ``~/.cache/ablate``. What lives there is
this machine's: a cache may be deleted at any time (it costs one recomputation), a journal holds
results a database has not taken yet.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def state_dir() -> Path:
    if os.environ.get("ABLATE_STATE_DIR"):
        return Path(os.environ["ABLATE_STATE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ablate"


def hash_sources(h: "hashlib._Hash") -> "hashlib._Hash":
    """Feed ablate's .py sources (every file of the package, by path and content) into ``h``: the
    code part of a cache's key."""
    root = Path(__file__).resolve().parent
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h


def beyond_newest(paths: Iterable[Path], keep: int) -> list[Path]:
    """Of ``paths``, all but the ``keep`` newest (by modification time): what a cache of several codes or
    databases drops. OSError (a path gone meanwhile) is the caller's."""
    return [p for _, p in sorted(((p.stat().st_mtime, p) for p in paths), reverse=True)[keep:]]


def write_atomic(path: Path, text: str) -> None:
    """``text`` to ``path`` (its folder exists), replaced atomically: a reader, or another process
    writing the same file, sees the old file or a whole new one. OSError is the caller's."""
    import tempfile  # here: a page taken whole from the cache writes no state (~3 ms: random, bisect)

    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise
