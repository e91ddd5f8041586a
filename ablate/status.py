"""What the database already holds for a planned study: each trial's state, and whether a completed
trial was made by other code (``stale``). ``ablate plan`` shows it; ``ablate run --rerun-stale``
retrains the stale ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ablate.plan import Plan
from ablate.provenance import code, stale_reasons

TO_RUN = "to run"


@dataclass
class PlannedStatus:
    status: str  # completed | failed | interrupted | running | pending | to run
    stale: list[str] = field(default_factory=list)  # why a completed trial counts as made by other code
    error_kind: str | None = None
    epochs_done: int = 0

    @property
    def label(self) -> str:
        """One short cell: 'completed', 'completed (stale)', 'failed (will recur)', '3/10 epochs'..."""
        if self.status == "completed" and self.stale:
            return "completed (stale)"
        if self.status == "failed":
            return "failed (will recur: fix the study)" if self.error_kind == "recurring" else "failed (rerun retries)"
        if self.status in ("interrupted", "running", "pending") and self.epochs_done:
            return f"{self.status}, {self.epochs_done} epochs stored"
        return self.status


def plan_status(plan: Plan, record: Any | None, current: dict[str, Any] | None = None,
                epochs: dict[str, int] | None = None) -> dict[str, PlannedStatus]:
    """Per planned trial id: its state in ``record`` (a ``StudyRecord``, or anything with ``trials``
    that have trial_id, status, provenance and error_kind; None when the database holds no such
    study). ``epochs``: {trial id: epochs stored} (``Reader.last_epochs`` + 1); without it they are
    counted in each trial's ``history``."""
    current = current or code()
    held = {t.trial_id: t for t in (record.trials if record is not None else [])}
    out: dict[str, PlannedStatus] = {}
    for p in plan.trials:
        t = held.get(p.trial.id)
        if t is None:
            out[p.trial.id] = PlannedStatus(TO_RUN)
            continue
        stale = stale_reasons(getattr(t, "provenance", None), current) if t.status == "completed" else []
        done = (epochs.get(p.trial.id, 0) if epochs is not None
                else max((len(h) for h in getattr(t, "history", {}).values()), default=0))
        out[p.trial.id] = PlannedStatus(t.status, stale, getattr(t, "error_kind", None), done)
    return out


def stale_ids(statuses: dict[str, PlannedStatus]) -> list[str]:
    return [tid for tid, s in statuses.items() if s.status == "completed" and s.stale]
