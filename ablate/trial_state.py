"""A trial's durable state in the artifact store, seen from the process that trains it.

The runner wraps the trainer with this: before training, ``resume()`` finds the last complete
epoch's checkpoint (so a rerun after Ctrl-C, ``kill -9`` of the driver, or the loss of a worker or
node continues there); each epoch, ``on_epoch`` writes the checkpoint *before* the epoch is reported
(with every earlier epoch's metrics inside it, so epochs whose report never reached the database are
re-reported on resume); at the end, ``on_complete`` applies the study's ``artifacts.keep``; on an
exception, ``on_error`` keeps the full traceback in ``error.txt`` and returns the readable text.
No Ray here.
"""

from __future__ import annotations

import json
import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.artifacts import BEST, ERROR, WEIGHTS, ArtifactStore
from ablate.text import strip_controls

COMPLETE = "complete.json"  # written when training ended: a rerun re-reports instead of retraining
HISTORY_KEY = "ablate_history"  # metrics of every epoch so far, inside each checkpoint
_PKG = str(Path(__file__).resolve().parent)

# Exceptions that come from the trial's own config or data and will happen again on a rerun.
RECURRING = (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError, AssertionError,
             FloatingPointError, ZeroDivisionError, ImportError, FileNotFoundError, PermissionError)
# ...unless they are one of these (resources of the moment: memory, a device, the network).
TRANSIENT_NAMES = ("OutOfMemoryError", "CUDA out of memory", "NCCL", "Connection", "Timeout", "ECC",
                   "ActorDied", "NodeDied", "WorkerCrashed")


def error_kind(exc: BaseException) -> str:
    """'recurring' (a rerun will fail the same way: fix the study) or 'transient' (rerun it)."""
    text = f"{type(exc).__name__}: {exc}"
    if any(n in text for n in TRANSIENT_NAMES):
        return "transient"
    return "recurring" if isinstance(exc, RECURRING) else "transient"


def readable_error(exc: BaseException, limit: int = 4000) -> str:
    """The exception's own message first, then the frames in ablate's code (the trainer's), without
    ANSI codes or Ray's internals; bounded in length."""
    message = strip_controls(f"{type(exc).__name__}: {exc}").strip()
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(_PKG)]
    lines = [message]
    if frames:
        lines.append("in ablate:")
        lines += [f"  {Path(f.filename).name}:{f.lineno} in {f.name}: {(f.line or '').strip()}" for f in frames[-8:]]
    text = "\n".join(lines)
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass
class TrialState:
    """``runtime``: the runner's per-trial settings (artifacts root, study, keep, metric, mode)."""

    trial_id: str
    runtime: dict[str, Any]
    is_writer: bool = True  # DDP: only rank 0 writes files
    history: list[dict[str, float]] = field(default_factory=list)
    best: float | None = None
    completed: bool = False  # training had ended before (the report may not have reached the database)

    def __post_init__(self) -> None:
        self.store = ArtifactStore(self.runtime.get("artifacts"))
        self.study = str(self.runtime["study"])
        self.keep = set(self.runtime.get("keep", ["final"]))
        self.metric, self.mode = self.runtime.get("metric", "top1"), self.runtime.get("mode", "max")

    def _p(self, name: str) -> str:
        return self.store.path(self.study, self.trial_id, name)

    # -- before training ---------------------------------------------------------------------
    def resume(self) -> dict[str, Any] | None:
        """The state after the last complete epoch, or None to start fresh. When the trial had already
        finished, ``completed`` is set and ``history`` holds every epoch to report again."""
        if self.store.exists(self._p(COMPLETE)):
            self.history = json.loads(self.store.read_bytes(self._p(COMPLETE)))["history"]
            self.completed = True
            return None
        ckpt = self.store.latest_checkpoint(self.study, self.trial_id)
        if ckpt is None:
            return None
        self.history = list(ckpt.state.get(HISTORY_KEY) or [])
        for m in self.history:
            self._track_best(m)
        return ckpt.state

    def init_weights(self) -> dict[str, Any] | None:
        """Weights of the trial this one fine-tunes from (``init_from``), read from the store."""
        src = self.runtime.get("init_from")
        if src and "trial" not in src:  # per trial (init_from.match_axes): {trial id: {"study", "trial"}}
            src = src.get(self.trial_id)
        if not src:
            return None
        return self.store.load(self.store.path(src["study"], src["trial"], WEIGHTS))

    # -- each epoch --------------------------------------------------------------------------
    def _track_best(self, metrics: dict[str, float]) -> bool:
        v = metrics.get(self.metric)
        if v is None or not math.isfinite(v):
            return False
        better = self.best is None or (v > self.best if self.mode == "max" else v < self.best)
        if better:
            self.best = v
        return better

    def on_epoch(self, metrics: dict[str, float], state: dict[str, Any] | None, last: bool) -> None:
        """Persist the epoch (checkpoint, best and final weights) before it is reported."""
        self.history.append(dict(metrics))
        improved = self._track_best(metrics)
        if not self.is_writer or state is None:
            return
        self.store.save_checkpoint(self.study, self.trial_id, int(metrics["epoch"]),
                                   {**state, HISTORY_KEY: self.history})
        if improved and "best" in self.keep:
            self.store.save(self._p(BEST), state["model"])
        if last:
            self.store.save(self._p(WEIGHTS), state["model"])  # init_from reads it; keep decides after

    # -- after -------------------------------------------------------------------------------
    def on_complete(self) -> int:
        """Apply ``artifacts.keep`` now that the trial is done; returns the bytes it keeps."""
        if not self.is_writer:
            return 0
        self.store.write_bytes(self._p(COMPLETE), json.dumps({"history": self.history}).encode())
        if "last_checkpoint" not in self.keep:
            self.store.drop_checkpoints(self.study, self.trial_id)
        if "final" not in self.keep:
            self.store.delete(self._p(WEIGHTS))
        if "best" not in self.keep:
            self.store.delete(self._p(BEST))
        return self.store.size(self.store.trial_dir(self.study, self.trial_id))

    def on_error(self, exc: BaseException) -> tuple[str, str]:
        """(readable text, kind); the full traceback goes to ``error.txt`` beside the checkpoints."""
        full = strip_controls("".join(traceback.format_exception(exc)))
        if self.is_writer:
            try:
                self.store.write_bytes(self._p(ERROR), full.encode())
            except OSError:
                pass  # the store itself may be what failed; the text still reaches the database
        return readable_error(exc), error_kind(exc)
