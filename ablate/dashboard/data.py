"""What the dashboard reads from the store, and no more: each trial's final values (no per-epoch
rows), per-epoch history only for the trials whose curves are drawn, one trial whole on request,
and a cheap fingerprint that says whether anything changed. SQL stays in ablate.store."""

from __future__ import annotations

from typing import Any, Iterable

from ablate.store_reads import Reader, StudyRecord, TrialRecord

History = dict[str, dict[str, list[tuple[int, float]]]]  # trial id -> metric -> [(epoch, value)]


def load_study(store: Reader, name: str) -> StudyRecord:
    """One study with its trials and their final values (``Reader.light_trials``: ``TableTrial``s,
    the records a table reads, with every final value by primary key, no per-epoch row), each arm's
    first trial with its config (what tables and plots read of a config), the other trials without
    one, no errors or times (``load_details`` reads them for the trials shown whole)."""
    info = store.study_info(name)
    trials = store.light_trials(name)
    firsts: dict[str, Any] = {}
    for t in trials:
        firsts.setdefault(t._arm, t)
    configs = store.configs(name, [t.trial_id for t in firsts.values()])
    for t in firsts.values():
        t.config = configs.get(t.trial_id, {})
    # a table arm whose first trial is not its arm's first (another profile or seed first): read when built
    return StudyRecord(info.name, info.description, info.spec, trials,  # type: ignore[arg-type]
                       configs=lambda ids: store.configs(name, ids))


def load_studies(store: Reader, names: Iterable[str] | None = None) -> list[StudyRecord]:
    """Every study (or those of ``names`` that exist), by name, as ``load_study`` reads them."""
    have = [n for n, _, _ in store.studies()]
    wanted = have if names is None else [n for n in names if n in set(have)]
    return [load_study(store, n) for n in wanted]


def load_history(store: Reader, study: str, trial_ids: list[str]) -> History:
    """Per-epoch metrics of ``trial_ids`` of ``study`` only."""
    return store.histories(study, trial_ids) if trial_ids else {}


def load_details(store: Reader, study: str, trials: list[Any], history: History) -> list[TrialRecord]:
    """``trials`` (records of the study as read: ``TableTrial`` or ``TrialRecord``) made whole for
    their details, as ``TrialRecord``s: params as stored, full config, provenance, error and times,
    every epoch."""
    ids = [t.trial_id for t in trials]
    full = {s.trial_id: s for s in store.trial_summaries(study, ids, config=True)}  # configs in the same query
    configs = {i: s.config for i, s in full.items()}
    errors = store.trial_errors(study, ids)
    out = []
    for t in trials:
        s = full.get(t.trial_id)
        # a summary read whole gives what the record lacks; without one (gone since), what the record has
        src: Any = s if s is not None else t
        out.append(TrialRecord(
            t.trial_id, src.params, configs.get(t.trial_id, t.config), t.seed, t.status, t.n_params, t.flops,
            errors.get(t.trial_id, getattr(t, "error", None)), getattr(src, "started_at", None),
            getattr(src, "ended_at", None), dict(t.final), history.get(t.trial_id, {}), dict(src.provenance),
            getattr(src, "attempts", 0), t.error_kind, list(getattr(t, "past_attempts", [])), t.profile))
    return out


def version(store: Reader) -> str:
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
