"""``ablate run``: plan a study, record it, run what is missing on Ray, read the table back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ablate.data import check_dataset
from ablate.plan import Plan, make_plan
from ablate.runner import TrialSink, run_trials
from ablate.store import COMPLETED, Store


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
              address: str | None = None, plan: Plan | None = None) -> RunSummary:
    """Run every trial of the study that has not completed. Bad input raises before anything is
    written; trials already completed (same id) are skipped; failed or interrupted ones rerun."""
    plan = plan or make_plan(path, profile)
    check_dataset(plan.study.dataset.model_dump())
    status = register_plan(store, plan)
    todo = [p.trial for p in plan.trials if status[p.trial.id] != COMPLETED]
    res = plan.study.resources
    try:
        run_trials(plan.study.name, todo, sink or store, cpus=res.cpus, gpus=res.gpus,
                   retries=res.retries, address=address)
    finally:
        store.mark_interrupted(plan.study.name)
    after = {t.trial_id: t.status for t in store.load(plan.study.name).trials}
    ids = [p.trial.id for p in plan.trials]
    return RunSummary(total=len(ids), skipped=len(ids) - len(todo), ran=len(todo),
                      completed=sum(after[i] == COMPLETED for i in ids),
                      failed=sum(after[i] == "failed" for i in ids))
