"""The artifact store: files a trial leaves that outlive its process — per-epoch checkpoints (so a
crash or kill resumes it), final and best weights (``init_from``), its full error text.

One root, set in one place: ``--artifacts`` or ``ABLATE_ARTIFACTS``, default ``./ablate-artifacts``.
A local path, a shared path every node mounts, or a URI pyarrow's filesystems open (``s3://bucket/x``,
``gs://...``, ``hdfs://...``). Layout: ``<root>/<study>/<trial_id>/{ckpt/epoch-NNNN.pt, model.pt,
best.pt, error.txt}``. Study names and trial ids are checked against a safe pattern, so no path
built here leaves the root.
"""

from __future__ import annotations

import io
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WEIGHTS = "model.pt"
BEST = "best.pt"
ERROR = "error.txt"
CKPT_DIR = "ckpt"
_CKPT_RE = re.compile(r"^epoch-(\d{4,})\.pt$")
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


class ArtifactPathError(ValueError):
    """A name that would become a path outside the artifact store."""


def artifacts_root() -> str:
    """``ABLATE_ARTIFACTS`` if set, else ``./ablate-artifacts`` (absolute)."""
    root = os.environ.get("ABLATE_ARTIFACTS") or "ablate-artifacts"
    return root if "://" in root else str(Path(root).resolve())


def safe_name(name: str, what: str = "name") -> str:
    """``name`` if it is one path component of letters, digits, '_', '.', '-' (not '.' or '..')."""
    if not _SAFE.match(name) or ".." in name:
        raise ArtifactPathError(f"{what} '{name}' cannot be a folder name: use letters, digits, '_', '.', '-', "
                                "starting with a letter or digit")
    return name


@dataclass
class Checkpoint:
    epoch: int
    state: dict[str, Any]


class ArtifactStore:
    """A trial's files under ``root`` on any pyarrow filesystem; writes are atomic (temp + move)."""

    def __init__(self, root: str | None = None):
        from pyarrow import fs

        self.uri = root or artifacts_root()
        if "://" in self.uri:
            self.fs, self.base = fs.FileSystem.from_uri(self.uri)
        else:
            self.fs, self.base = fs.LocalFileSystem(), str(Path(self.uri).resolve())
        self.base = self.base.rstrip("/")

    # -- paths -------------------------------------------------------------------------------
    def trial_dir(self, study: str, trial_id: str) -> str:
        return f"{self.base}/{safe_name(study, 'study')}/{safe_name(trial_id, 'trial id')}"

    def path(self, study: str, trial_id: str, name: str) -> str:
        return f"{self.trial_dir(study, trial_id)}/{name}"

    def display(self, path: str) -> str:
        """A path as the user gave the root (URI scheme kept)."""
        if "://" in self.uri:
            return self.uri.rstrip("/") + path[len(self.base):]
        return path

    # -- bytes -------------------------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, path)  # a killed write leaves a .tmp file, never a half checkpoint

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def exists(self, path: str) -> bool:
        from pyarrow import fs

        return self.fs.get_file_info(path).type != fs.FileType.NotFound

    def delete(self, path: str) -> None:
        from pyarrow import fs

        info = self.fs.get_file_info(path)
        if info.type == fs.FileType.Directory:
            self.fs.delete_dir(path)
        elif info.type == fs.FileType.File:
            self.fs.delete_file(path)

    def listdir(self, path: str) -> list[tuple[str, int, bool]]:
        """(name, size, is_dir) of the entries of ``path`` ([] if it does not exist)."""
        from pyarrow import fs

        if not self.exists(path):
            return []
        out = []
        for info in self.fs.get_file_info(fs.FileSelector(path, recursive=False)):
            out.append((info.base_name, int(info.size or 0), info.type == fs.FileType.Directory))
        return out

    def size(self, path: str) -> int:
        """Bytes under ``path`` (a file or a folder, recursively)."""
        from pyarrow import fs

        info = self.fs.get_file_info(path)
        if info.type == fs.FileType.File:
            return int(info.size or 0)
        if info.type != fs.FileType.Directory:
            return 0
        return sum(int(i.size or 0) for i in self.fs.get_file_info(fs.FileSelector(path, recursive=True))
                   if i.type == fs.FileType.File)

    # -- torch objects -----------------------------------------------------------------------
    def save(self, path: str, obj: Any) -> None:
        import torch

        buf = io.BytesIO()
        torch.save(obj, buf)
        self.write_bytes(path, buf.getvalue())

    def load(self, path: str, *, weights_only: bool = True) -> Any:
        import torch

        return torch.load(io.BytesIO(self.read_bytes(path)), map_location="cpu", weights_only=weights_only)

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoints(self, study: str, trial_id: str) -> list[int]:
        """Epochs (0-based) with a complete checkpoint, ascending."""
        names = self.listdir(self.path(study, trial_id, CKPT_DIR))
        return sorted(int(m.group(1)) for n, _, d in names if not d and (m := _CKPT_RE.match(n)))

    def save_checkpoint(self, study: str, trial_id: str, epoch: int, state: dict[str, Any], keep: int = 1) -> None:
        """The full training state after ``epoch``; older checkpoints beyond ``keep`` are removed."""
        self.save(self.path(study, trial_id, f"{CKPT_DIR}/epoch-{epoch:04d}.pt"), state)
        for old in self.checkpoints(study, trial_id)[:-keep]:
            self.delete(self.path(study, trial_id, f"{CKPT_DIR}/epoch-{old:04d}.pt"))

    def latest_checkpoint(self, study: str, trial_id: str) -> Checkpoint | None:
        """The newest checkpoint that loads; a damaged one (a torn write on a dying node) is skipped."""
        for epoch in reversed(self.checkpoints(study, trial_id)):
            try:  # the state holds RNG states (numpy/python objects): trusted, written by ablate
                state = self.load(self.path(study, trial_id, f"{CKPT_DIR}/epoch-{epoch:04d}.pt"), weights_only=False)
            except Exception:  # noqa: BLE001 - any unreadable file is skipped, the previous one used
                continue
            return Checkpoint(epoch, state)
        return None

    def drop_checkpoints(self, study: str, trial_id: str) -> int:
        """Remove a trial's checkpoints; returns the bytes freed."""
        path = self.path(study, trial_id, CKPT_DIR)
        n = self.size(path)
        self.delete(path)
        return n

    def trials(self, study: str) -> list[str]:
        """Trial ids that have a folder under the study."""
        return [n for n, _, d in self.listdir(f"{self.base}/{safe_name(study, 'study')}") if d and _SAFE.match(n)]
