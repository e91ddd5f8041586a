"""Live progress of a running study (rich): pending / running / done / failed, the best so far,
each running trial's epoch and an ETA. On a non-terminal (CI logs) it prints one line per event.

It is a ``TrialSink`` that forwards every event to the store, then updates the display.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ablate.plan import Plan
from ablate.runner import TrialSink


class ProgressSink:
    def __init__(self, inner: TrialSink, plan: Plan, console: Console | None = None):
        self.inner, self.plan = inner, plan
        self.console = console or Console(stderr=True)
        self.metric, self.mode = plan.study.metric.name, plan.study.metric.mode
        self.epochs = plan.study.recipe.epochs
        self.labels = {p.trial.id: " ".join(f"{k.split('.')[-1]}={v}" for k, v in p.trial.params.items())
                       for p in plan.trials}
        self.state: dict[str, str] = {}
        self.epoch: dict[str, int] = {}
        self.best: tuple[float, str] | None = None
        self.t0 = time.monotonic()
        self.epochs_done = 0
        self.live: Live | None = None

    # -- context -----------------------------------------------------------------------------
    def __enter__(self) -> "ProgressSink":
        if self.console.is_terminal:
            self.live = Live(self._render(), console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(*exc)

    # -- TrialSink ---------------------------------------------------------------------------
    def start(self, study: str, trial_id: str) -> None:
        self.inner.start(study, trial_id)
        self.state[trial_id], self.epoch[trial_id] = "running", 0
        self._event(f"start  {trial_id}  {self.labels.get(trial_id, '')}")

    def add_metrics(self, study: str, trial_id: str, epoch: int, values: dict[str, float]) -> None:
        self.inner.add_metrics(study, trial_id, epoch, values)
        self.epoch[trial_id] = epoch + 1
        self.epochs_done += 1
        if self.metric in values:
            v = values[self.metric]
            if self.best is None or (v > self.best[0] if self.mode == "max" else v < self.best[0]):
                self.best = (v, trial_id)
        shown = ", ".join(f"{k}={values[k]:.4g}" for k in ("train_loss", self.metric) if k in values)
        self._event(f"epoch  {trial_id}  {epoch + 1}/{self.epochs}  {shown}")

    def update_provenance(self, study: str, trial_id: str, values: dict[str, Any]) -> None:
        self.inner.update_provenance(study, trial_id, values)

    def finish(self, study: str, trial_id: str, error: str | None = None, *, error_kind: str | None = None) -> None:
        self.inner.finish(study, trial_id, error, error_kind=error_kind)
        self.state[trial_id] = "failed" if error else "done"
        last = (error or "").strip().splitlines()[-1:] if error else []
        self._event(f"{'FAILED' if error else 'done  '} {trial_id}  {self.labels.get(trial_id, '')}"
                    + (f"  {last[0]}" if last else ""))

    # -- display -----------------------------------------------------------------------------
    def _event(self, line: str) -> None:
        if self.live is not None:
            self.live.update(self._render())
        else:
            self.console.print(f"[ablate] {line}", highlight=False, markup=False)

    def _eta(self) -> str:
        total = len(self.plan.trials) * self.epochs
        remaining = total - self.epochs_done - sum(self.epochs for s in self.state.values() if s == "done") \
            + sum(self.epoch.get(t, 0) for t, s in self.state.items() if s == "done")
        if self.epochs_done == 0:
            return "?"
        per_epoch = (time.monotonic() - self.t0) / self.epochs_done
        return f"{max(0, remaining) * per_epoch / 60:.1f} min (upper bound; trials run in parallel)"

    def _render(self) -> Table:
        n = len(self.plan.trials)
        counts = {s: sum(v == s for v in self.state.values()) for s in ("running", "done", "failed")}
        t = Table(title=f"{self.plan.study.name}: {n - sum(counts.values())} pending, {counts['running']} running, "
                        f"{counts['done']} done, {counts['failed']} failed", title_justify="left")
        t.add_column("trial")
        t.add_column("arm")
        t.add_column("status")
        t.add_column("epoch", justify="right")
        for tid, s in self.state.items():
            t.add_row(tid, self.labels.get(tid, ""), s, f"{self.epoch.get(tid, 0)}/{self.epochs}")
        best = f"{self.metric} {self.best[0]:.2f} ({self.best[1]})" if self.best else "–"
        t.caption = f"best: {best}   elapsed {time.monotonic() - self.t0:.0f}s   ETA {self._eta()}"
        return t
