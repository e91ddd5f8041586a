"""What the dashboard reads from the store, and no more: each trial's final values (no per-epoch
rows), per-epoch history only for the trials whose curves are drawn, one trial whole on request,
and a cheap fingerprint that says whether anything changed. SQL stays in ablate.store."""

from __future__ import annotations

from typing import Any, Iterable

from ablate.store import Store, StudyRecord, TrialRecord

History = dict[str, dict[str, list[tuple[int, float]]]]  # trial id -> metric -> [(epoch, value)]


def load_studies(store: Store, names: Iterable[str] | None = None) -> list[StudyRecord]:
    """Every study (or ``names``) with its trials and their final values, without history."""
    fn = getattr(store, "load_summaries", None)
    if fn is not None:
        return fn(names)
    return store.load_many(names, history=False)


def load_history(store: Store, study: str, trial_ids: list[str]) -> History:
    """Per-epoch metrics of ``trial_ids`` of ``study`` only."""
    if not trial_ids:
        return {}
    fn = getattr(store, "load_history", None)
    if fn is not None:
        return fn(study, trial_ids)
    want = set(trial_ids)
    return {t.trial_id: t.history for t in store.load(study, history=True).trials if t.trial_id in want}


def version(store: Store) -> str:
    return store.results_version()


def detail(study: str, rec: TrialRecord) -> dict[str, Any]:
    """What a click on a trial shows: ``ablate show --format json``'s object, its error with the
    message first and no terminal control codes."""
    from ablate.show import trial_json
    from ablate.dashboard.page import message_first

    out = trial_json(study, rec)
    out["error"] = message_first(rec.error) if rec.error else None
    for a in out.get("past_attempts") or []:
        if a.get("error"):
            a["error"] = message_first(a["error"])
    return out
