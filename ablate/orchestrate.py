"""``ablate run``: plan a study, record it, run what is missing on Ray, read the table back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ablate.artifacts import WEIGHTS, ArtifactStore
from ablate.data import check_dataset
from ablate.expand import get_path
from ablate.plan import Plan, make_plan
from ablate.runner import TrialSink, run_trials
from ablate.store import COMPLETED, Store


class InitFromError(Exception):
    """``init_from`` names a trial that is not in the database, not completed, or has no weights."""


def resolve_init_from(store: Store, plan: Plan, artifacts: ArtifactStore) -> dict[str, str] | None:
    """The trial a study fine-tunes from ({"study", "trial"}), its weights checked before anything runs."""
    ref = plan.study.init_from
    if ref is None:
        return None
    try:
        source = store.load(ref.study)
    except KeyError:
        raise InitFromError(f"init_from: study '{ref.study}' is not in {store.url}; run it first") from None
    done = [t for t in source.trials if t.status == COMPLETED]
    if ref.trial is not None:
        found = [t for t in done if t.trial_id == ref.trial]
    else:
        def matches(t) -> bool:
            try:
                return all(t.params.get(k, get_path(t.config, k)) == v for k, v in (ref.match or {}).items())
            except KeyError:
                return False
        found = [t for t in done if matches(t)]
    if len(found) != 1:
        what = f"trial '{ref.trial}'" if ref.trial else f"a trial matching {ref.match}"
        raise InitFromError(f"init_from: expected exactly one completed {what} in study '{ref.study}', "
                            f"found {len(found)}" + (" (add seed to match)" if len(found) > 1 else ""))
    path = artifacts.path(ref.study, found[0].trial_id, WEIGHTS)
    if not artifacts.exists(path):
        raise InitFromError(f"init_from: no weights at {artifacts.display(path)} (set --artifacts / ABLATE_ARTIFACTS "
                            "to where that study ran; its artifacts.keep must include 'final')")
    return {"study": ref.study, "trial": found[0].trial_id}


@dataclass
class RunSummary:
    total: int
    skipped: int  # completed earlier
    ran: int
    completed: int
    failed: int


def register_plan(store: Store, plan: Plan) -> dict[str, str]:
    """Record the study and its trials; returns each trial's status before this run."""
    spec = plan.study.model_dump(mode="json")
    rows = [{"trial_id": p.trial.id, "params": p.trial.params, "config": p.trial.config,
             "seed": p.trial.seed, "n_params": p.n_params, "flops": p.flops} for p in plan.trials]
    return store.register(plan.study.name, plan.study.description, spec, rows)


def run_study(path: str | Path, profile: str | None = None, *, store: Store, sink: TrialSink | None = None,
              address: str | None = None, plan: Plan | None = None, artifacts: str | None = None) -> RunSummary:
    """Run every trial of the study that has not completed. Bad input raises before anything is
    written; trials already completed (same id) are skipped; failed or interrupted ones rerun."""
    plan = plan or make_plan(path, profile)
    check_dataset(plan.study.dataset.model_dump())
    files = ArtifactStore(artifacts)
    init_from = resolve_init_from(store, plan, files)
    status = register_plan(store, plan)
    todo = [p.trial for p in plan.trials if status[p.trial.id] != COMPLETED]
    res = plan.study.resources
    try:
        run_trials(plan.study.name, todo, sink or store, cpus=res.cpus, gpus=res.gpus,
                   retries=res.retries, workers=res.workers, address=address,
                   init_from=init_from, artifacts=files.uri, keep=plan.study.artifacts.keep,
                   metric=plan.study.metric.name, mode=plan.study.metric.mode)
    finally:
        store.mark_interrupted(plan.study.name)
    after = {t.trial_id: t.status for t in store.load(plan.study.name).trials}
    ids = [p.trial.id for p in plan.trials]
    return RunSummary(total=len(ids), skipped=len(ids) - len(todo), ran=len(todo),
                      completed=sum(after[i] == COMPLETED for i in ids),
                      failed=sum(after[i] == "failed" for i in ids))
