"""``ablate analyze``: which completed trials lack which declared analysis, and storing what the
analysis tasks return (the driver is the single writer of the database).

An analysis of a trial is done when its scalars are among the trial's metrics, its arrays are in
the artifact store, and the trial's provenance records that it was computed with the options that
change its result (``Analysis.identity``): a rerun skips it, a changed option (say ``size``)
computes it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ablate.analyses import PROVENANCE_KEY, get
from ablate.artifacts import ArtifactStore
from ablate.store import COMPLETED, StudyRecord, TrialRecord


@dataclass
class AnalyzeSummary:
    declared: list[str]
    trials: int  # completed trials of the study
    skipped: int = 0  # (trial, analysis) pairs already done
    ran: int = 0
    failed: int = 0
    not_completed: int = 0  # trials of the study that are not completed (nothing to analyse yet)
    errors: list[str] = field(default_factory=list)  # "trial name: error", one per failure


def is_done(name: str, options: Any, trial: TrialRecord, files: ArtifactStore, study: str) -> bool:
    analysis = get(name)
    recorded = (trial.provenance or {}).get(PROVENANCE_KEY, {}).get(name)
    return (recorded == analysis.identity(options)
            and all(m in trial.final for m in analysis.scalars(options))
            and all(files.exists(files.path(study, trial.trial_id, a)) for a in analysis.arrays(options)))


def pending_jobs(study: Any, record: StudyRecord | None, trial_ids: list[str],
                 files: ArtifactStore) -> tuple[list[dict[str, Any]], AnalyzeSummary]:
    """The (trial, analysis) jobs still to do among ``trial_ids`` (the plan's trials, in order)."""
    declared = study.analyses.declared() if study.analyses else {}
    by_id = {t.trial_id: t for t in (record.trials if record else [])}
    completed = [by_id[i] for i in trial_ids if i in by_id and by_id[i].status == COMPLETED]
    summary = AnalyzeSummary(list(declared), len(completed), not_completed=len(trial_ids) - len(completed))
    jobs = []
    for trial in completed:
        for name, opts in declared.items():
            if is_done(name, opts, trial, files, study.name):
                summary.skipped += 1
                continue
            jobs.append({"name": name, "options": opts.model_dump(mode="json"), "study": study.name,
                         "trial_id": trial.trial_id, "config": trial.config,
                         "identity": get(name).identity(opts), "provenance": trial.provenance or {}})
    return jobs, summary


def analyze_study(plan: Any, store: Any, sink: Any, *, address: str | None = None, artifacts: str | None = None,
                  console: Any = None) -> AnalyzeSummary:
    """Run every declared analysis that a completed trial of ``plan`` lacks, as Ray tasks with the
    study's per-trial resources; scalars and provenance go to ``sink`` (the store or its journal)."""
    from ablate._analysis_tasks import run_analysis_tasks

    study = plan.study
    files = ArtifactStore(artifacts)
    try:
        record = store.load(study.name)
    except KeyError:
        record = None
    jobs, summary = pending_jobs(study, record, [p.trial.id for p in plan.trials], files)
    if not jobs:
        return summary
    store.check_writable()  # before Ray: results that could not be stored are not computed
    recorded: dict[str, dict[str, Any]] = {}  # trial -> its analyses provenance, as written so far
    labels = {p.trial.id: " ".join(f"{k.split('.')[-1]}={v}" for k, v in p.trial.params.items()) for p in plan.trials}

    with _progress(console, len(jobs)) as advance:
        def on_done(job: dict[str, Any], out: dict[str, Any]) -> None:
            tid = job["trial_id"]
            if "error" in out:
                summary.failed += 1
                summary.errors.append(f"{tid} ({labels.get(tid, '')}) {job['name']}: {out['error']}")
            else:
                sink.add_analysis(study.name, tid, out["scalars"])  # scalars first, then the record that says done
                mine = recorded.setdefault(tid, dict(job["provenance"].get(PROVENANCE_KEY) or {}))
                mine[job["name"]] = job["identity"]
                sink.update_provenance(study.name, tid, {PROVENANCE_KEY: dict(mine)})
                summary.ran += 1
            advance(f"{job['name']} of {tid} {'failed' if 'error' in out else 'done'}")

        res = study.resources
        run_analysis_tasks(jobs, on_done, cpus=res.cpus, gpus=res.gpus, address=address, artifacts=files.uri)
    return summary


class _progress:
    """A rich progress bar over the analysis tasks (plain lines when not on a terminal)."""

    def __init__(self, console: Any, total: int):
        self.console, self.total, self.done = console, total, 0
        self.bar: Any = None

    def __enter__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = self.console or Console(stderr=True)
        if self.console.is_terminal:
            self.bar = Progress(TextColumn("analyses"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.description}"), console=self.console)
            self.bar.__enter__()
            self.task = self.bar.add_task("", total=self.total)
        return self._advance

    def _advance(self, what: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=what)
        else:
            self.console.print(f"analyses {self.done}/{self.total}: {what}", markup=False, highlight=False)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
