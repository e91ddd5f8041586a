"""The static page's study blobs kept between runs of ``dashboard --out``.

A 10,000-trial page is ~0.5 CPU s of Python, nearly all of it per study, while a run changes one
study: so each study's blob (its JSON text, as the page embeds it) and its trials by status are kept
in the state folder (``ablate.state``), in a folder keyed by the database (its file, by path and
inode), the artifact folder and ablate's own sources, under the study's ``Reader.study_versions``
fingerprint. A blob is used only while that fingerprint is unchanged; any other blob is built again.
The per-study fingerprints are read only when the database's ``results_version`` (a few aggregates)
differs from the one they were read under, and then only the metric rows written since.
Studies whose view reads artifact arrays (ERF, kernel maps) are never kept: those files change
without the database knowing. Only SQLite files are cached (a server database's identity is not a
path). It is a cache: a missing, unreadable or foreign file is rebuilt, ``ABLATE_PAGE_CACHE=0``
turns it off, and a state folder that cannot be written only means no cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from ablate.dashboard.page import Encoded, StudyCounts

FOLDER = "dashboard-pages"
KEEP_KEYS = 8  # folders of other databases / code kept beside this one's (the newest)
FORMAT = 1
VERSIONS = "versions.json"  # the study versions last read, and the results_version they were read under


class BlobCache:
    """One database's kept blobs (``open``); ``load`` what is current, ``save`` what was built."""

    def __init__(self, folder: Path, versions: dict[str, str], known: dict[str, Any] | None = None):
        self.folder, self.versions = folder, versions
        self.known = known  # what to record in VERSIONS: the versions and what they were read under (None: as is)

    @classmethod
    def open(cls, store: Any, artifacts: Path | str | None) -> BlobCache | None:
        """The cache of ``store``'s SQLite file, or None (turned off, not a file, no state folder)."""
        from ablate.state import hash_sources, state_dir
        from ablate.store_reads import sqlite_file

        if os.environ.get("ABLATE_PAGE_CACHE", "1") == "0":
            return None
        path = sqlite_file(store.url)
        if path is None:
            return None
        try:
            db = path.resolve()
            key = json.dumps([FORMAT, str(db), db.stat().st_ino, str(artifacts or ""),
                              os.environ.get("ABLATE_ARTIFACTS", ""), hash_sources(hashlib.sha256()).hexdigest()])
            folder = state_dir() / FOLDER / hashlib.sha256(key.encode()).hexdigest()[:16]
        except (OSError, RuntimeError):  # no file, no home directory
            return None
        results = store.results_version()  # first: versions read after it are at least as new
        try:
            known = json.loads((folder / VERSIONS).read_text(encoding="utf-8"))
            if not (known.get("format") == FORMAT and isinstance(known.get("studies"), dict)
                    and isinstance(known.get("metric_ids"), dict) and isinstance(known.get("after"), int)):
                known = {}
        except (OSError, ValueError, AttributeError):
            known = {}
        if known and known.get("results") == results:
            return cls(folder, known["studies"])
        versions, ids, top = store.study_versions(known.get("metric_ids"), known.get("after", 0))
        return cls(folder, versions, {"format": FORMAT, "results": results, "studies": versions,
                                      "metric_ids": ids, "after": top})

    def _file(self, name: str) -> Path:
        return self.folder / (hashlib.sha256(name.encode()).hexdigest()[:16] + ".blob")

    def load(self, names: list[str]) -> dict[str, tuple[StudyCounts, Encoded]]:
        """The kept blobs of ``names`` whose study is unchanged since."""
        out = {}
        for name in names:
            try:
                with open(self._file(name), encoding="utf-8") as f:
                    head = json.loads(f.readline())
                    if (head.get("format") != FORMAT or head.get("name") != name
                            or head.get("version") != self.versions.get(name)):
                        continue
                    blob = f.read()
            except (OSError, ValueError, AttributeError):
                continue
            out[name] = (StudyCounts(name, Counter(head["counts"])), Encoded(blob))
        return out

    def save(self, built: dict[str, tuple[StudyCounts, Encoded, bool]]) -> None:
        """Keep what was built (but blobs that read artifact arrays: ``keep`` False), each file
        replaced atomically; drop files of studies gone from the database and folders of all but the
        ``KEEP_KEYS`` newest other keys."""
        from ablate.state import beyond_newest, write_atomic

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for name, (counts, blob, keep) in built.items():
                if not keep or name not in self.versions:
                    self._file(name).unlink(missing_ok=True)
                    continue
                head = json.dumps({"format": FORMAT, "name": name, "version": self.versions[name],
                                   "counts": dict(counts.statuses)})
                write_atomic(self._file(name), head + "\n" + blob)
            current = {self._file(n).name for n in self.versions}
            for f in self.folder.glob("*.blob"):
                if f.name not in current:
                    f.unlink(missing_ok=True)
            others = (d for d in self.folder.parent.iterdir() if d != self.folder and d.is_dir())
            for d in beyond_newest(others, KEEP_KEYS):
                for f in d.iterdir():
                    f.unlink(missing_ok=True)
                d.rmdir()
            if self.known is not None:
                write_atomic(self.folder / VERSIONS, json.dumps(self.known))
            os.utime(self.folder)  # this key is the newest
        except OSError:
            return

