"""Which code and which machine produced a trial: stored with every trial, shown by ``ablate show``,
and compared by ``ablate plan`` to mark results made by other code as stale.

``code()`` runs on the driver (ablate's version, the git commit and dirty flag of the working tree
ablate runs from); ``environment()`` runs in the worker that trains (host, library versions,
devices). Neither imports Ray; ``environment`` imports torch, which the worker has loaded anyway.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
# fields whose difference makes a completed trial "stale" (made by other code)
CODE_FIELDS = ("ablate_version", "git_commit", "git_dirty")


def _version(dist: str) -> str | None:
    from importlib import metadata  # ~50 ms; only a worker's environment() needs it

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(_REPO), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@lru_cache(maxsize=1)
def code() -> dict[str, Any]:
    """ablate's version and, when ablate runs from a git checkout, its commit and dirty flag."""
    import socket  # here: a table or page that only judges provenance needs none of it (~5 ms)

    from ablate import __version__

    commit = _git("rev-parse", "HEAD") if (_REPO / ".git").exists() else None
    dirty = None
    if commit is not None:
        status = _git("status", "--porcelain", "--untracked-files=no", "--", "ablate", "db", "pyproject.toml")
        dirty = bool(status) if status is not None else None
    return {"ablate_version": __version__, "git_commit": commit, "git_dirty": dirty,
            "python": platform.python_version(), "driver_host": socket.gethostname()}


def environment() -> dict[str, Any]:
    """The worker's host, library versions and devices (called inside the trial's process)."""
    import socket

    import torch

    env: dict[str, Any] = {
        "host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
        "torch": str(torch.__version__), "torchvision": _version("torchvision"), "timm": _version("timm"),
        "ray": _version("ray"), "numpy": _version("numpy"),
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    env["devices"] = ([torch.cuda.get_device_name(i) for i in range(env["device_count"])]
                      or [platform.processor() or platform.machine() or "cpu"])
    env["argv0"] = Path(sys.argv[0]).name if sys.argv else None
    return env


def stale_reasons(stored: dict[str, Any] | None, current: dict[str, Any] | None = None) -> list[str]:
    """Why a completed trial's provenance differs from the code running now ([] = same code). The
    running code (``code``: two git commands) is asked only for a trial that has a provenance."""
    if not stored:
        return ["no provenance (made before ablate recorded it)"]
    current = current or code()
    out = []
    for k in CODE_FIELDS:
        if k == "git_dirty":
            if stored.get(k):
                out.append("made from a working tree with uncommitted changes")
        elif stored.get(k) != current.get(k):
            out.append(f"{k.replace('_', ' ')} {stored.get(k) or '?'} (now {current.get(k) or '?'})")
    return out
