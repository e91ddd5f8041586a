"""Training outlives the database: a sink that keeps results in a local journal while the
database is unreachable and writes them, in order, once it is back.

``JournalingSink`` wraps the store for one driver (``owner``). A write that fails with a
connection error (server stopped, network gone, lock timeout) is appended to a JSONL journal,
``journal-<owner>.jsonl`` in the state folder (``$ABLATE_STATE_DIR``, else
``$XDG_CACHE_HOME/ablate``, else ``~/.cache/ablate``); from then on every event goes to the journal
behind it, so order is kept, and a background thread reconnects with backoff and replays the
journal. Replays are idempotent (a start carries its time, metrics are upserts, a completed trial
is never touched again), so an event applied twice does no harm. A journal left by a driver that
died is replayed by the next run against the same database (``replay_leftovers``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ablate.state import state_dir, write_atomic
from ablate.store import Store, _now, is_connection_error, new_owner, owner_is_dead

log = logging.getLogger("ablate.journal")
EVENTS = ("start", "add_metrics", "finish", "update_provenance", "add_analysis")


def journal_path(owner: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in owner)
    return state_dir() / f"journal-{safe}.jsonl"


def _apply(store: Store, entry: dict[str, Any]) -> None:
    """One journaled event against the store (idempotent)."""
    ev, a = entry["event"], entry["args"]
    if ev == "start":
        store.start(a["study"], a["trial_id"], a.get("owner"), at=datetime.fromisoformat(a["at"]))
    elif ev == "add_metrics":
        store.add_metrics(a["study"], a["trial_id"], int(a["epoch"]), a["values"])
    elif ev == "finish":
        store.finish(a["study"], a["trial_id"], a.get("error"), error_kind=a.get("error_kind"))
    elif ev == "update_provenance":
        store.update_provenance(a["study"], a["trial_id"], a["values"])
    elif ev == "add_analysis":
        store.add_analysis(a["study"], a["trial_id"], a["values"])
    else:
        raise ValueError(f"unknown journal event {ev!r}")


def _read(path: Path) -> list[dict[str, Any]]:
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a crash mid-write: nothing after it
            break
    return entries


def _replay_file(store: Store, path: Path) -> int:
    """Apply a journal file's events in order; the file shrinks to what is left if the database
    goes away again (then the connection error propagates). Returns how many were applied."""
    entries = _read(path)
    done = 0
    try:
        for entry in entries:
            try:
                _apply(store, entry)
            except KeyError as e:  # the trial is no longer registered (study deleted): nothing to keep
                log.warning("journal %s: skipping %s (%s)", path, entry.get("event"), e)
            done += 1
    finally:
        if done == len(entries):
            path.unlink(missing_ok=True)
        elif done:
            write_atomic(path, "".join(json.dumps(e) + "\n" for e in entries[done:]))
    return done


def replay_leftovers(store: Store) -> int:
    """Replay journals of dead drivers of this host that wrote to this database. A journal whose
    database is still unreachable stays for the next run. Returns the events written."""
    d = state_dir()
    if not d.is_dir():
        return 0
    n = 0
    for path in sorted(d.glob("journal-*.jsonl")):
        try:
            with path.open() as f:
                head = json.loads(f.readline() or "{}")
        except (OSError, json.JSONDecodeError):
            continue
        if head.get("url") != store.display_url or not owner_is_dead(head.get("owner", "")):
            continue
        mine = path.with_name(path.name + f".replaying-{os.getpid()}")
        try:
            os.rename(path, mine)  # atomic: of two successors, one gets it, the other FileNotFoundError
        except OSError:
            continue
        try:
            n += _replay_file(store, mine)
            log.warning("replayed %d journaled events of driver %s into %s", n, head.get("owner"), store.display_url)
        except Exception as e:
            if not is_connection_error(e):
                raise
        finally:
            if mine.exists():
                os.replace(mine, path)  # what is left stays for the next run
    return n


class JournalingSink:
    """The driver's ``TrialSink``: the store, with a local journal while the database is away."""

    def __init__(self, store: Store, owner: str | None = None, *, path: Path | None = None,
                 backoff: tuple[float, float] = (0.5, 10.0)):
        self.store, self.owner = store, owner or new_owner()
        self.path = path or journal_path(self.owner)
        self.backoff = backoff
        self.journaled = 0  # events that went through the journal (for the summary)
        self._lock = threading.RLock()
        self._pending = self.path.is_file() and bool(_read(self.path))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- TrialSink ---------------------------------------------------------------------------
    def start(self, study: str, trial_id: str) -> None:
        self._event("start", study=study, trial_id=trial_id, owner=self.owner, at=_now().isoformat())

    def add_metrics(self, study: str, trial_id: str, epoch: int, values: dict[str, float]) -> None:
        self._event("add_metrics", study=study, trial_id=trial_id, epoch=int(epoch),
                    values={k: float(v) for k, v in values.items()})

    def finish(self, study: str, trial_id: str, error: str | None = None, *, error_kind: str | None = None) -> None:
        self._event("finish", study=study, trial_id=trial_id, error=error, error_kind=error_kind)

    def update_provenance(self, study: str, trial_id: str, values: dict[str, Any]) -> None:
        self._event("update_provenance", study=study, trial_id=trial_id, values=values)

    def add_analysis(self, study: str, trial_id: str, values: dict[str, float]) -> None:
        """An analysis's scalars of a completed trial (``Store.add_analysis``)."""
        self._event("add_analysis", study=study, trial_id=trial_id, values={k: float(v) for k, v in values.items()})

    # -- state -------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Events in the journal not yet in the database."""
        with self._lock:
            return len(_read(self.path)) if self._pending and self.path.is_file() else 0

    def flush(self, timeout: float = 0.0) -> int:
        """Try to write the journal now, retrying with backoff up to ``timeout`` seconds.
        Returns the events still pending (kept in ``self.path`` for a later run)."""
        deadline = time.monotonic() + timeout
        delay = self.backoff[0]
        while True:
            if self._try_replay():
                return 0
            if time.monotonic() + delay > deadline:
                return self.pending
            time.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    def close(self, timeout: float = 30.0) -> int:
        """Stop the reconnect thread and flush (see ``flush``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, self.backoff[1]))
        return self.flush(timeout)

    # -- internals ---------------------------------------------------------------------------
    def _event(self, event: str, **args: Any) -> None:
        with self._lock:
            if not self._pending:
                try:
                    _apply(self.store, {"event": event, "args": args})
                    return
                except Exception as e:
                    if not is_connection_error(e):
                        raise
                    log.warning("database %s unreachable (%s); keeping results in %s until it is back",
                                self.store.display_url, str(e).splitlines()[0][:200], self.path)
            self._append(event, args)
            self._ensure_reconnector()

    def _append(self, event: str, args: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"url": self.store.display_url, "owner": self.owner, "event": event, "args": args})
        with self.path.open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())  # a killed driver's journal is complete up to its last event
        self._pending = True
        self.journaled += 1

    def _try_replay(self) -> bool:
        with self._lock:
            if not self._pending:
                return True
            try:
                if self.path.is_file():
                    _replay_file(self.store, self.path)
            except Exception as e:
                if not is_connection_error(e):
                    raise
                return False
            self._pending = False
            log.warning("database %s is back: journaled results written", self.store.display_url)
            return True

    def _ensure_reconnector(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._reconnect, name="ablate-journal", daemon=True)
        self._thread.start()

    def _reconnect(self) -> None:
        delay = self.backoff[0]
        while not self._stop.wait(delay):
            try:
                if self._try_replay():
                    return
            except Exception:  # not a connection error: keep the journal, report at close
                log.exception("replaying %s failed", self.path)
                return
            delay = min(delay * 2, self.backoff[1])
