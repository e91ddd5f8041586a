"""Live progress of a running study (rich): pending / running / done / failed, the best so far,
each running trial's epoch and an ETA. On a non-terminal (CI logs) it prints one line per event.

It is a ``TrialSink`` that forwards every event to the store, then updates the display. The work
per event is O(1) however many trials the study has: counts, the ETA's sums and the best value are
kept up to date as events arrive, and the screen is redrawn by rich's refresh (twice a second)
rather than on every event, showing the running trials and then the latest finished ones, as many
as the terminal has lines for.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ablate.text import strip_controls

if TYPE_CHECKING:  # types only: importing them loads torch and Ray, which a display does not need
    from ablate.plan import Plan
    from ablate.runner import TrialSink

STATES = ("running", "done", "failed")


class ProgressSink:
    def __init__(self, inner: "TrialSink", plan: "Plan", console: Console | None = None):
        self.inner, self.plan = inner, plan
        self.console = console or Console(stderr=True)
        self.metric, self.mode = plan.study.metric.name, plan.study.metric.mode
        self.epochs = plan.study.recipe.epochs
        self.n_trials = len(plan.trials)
        self.labels = {p.trial.id: " ".join(f"{k.split('.')[-1]}={v}" for k, v in p.trial.params.items())
                       for p in plan.trials}
        self.state: dict[str, str] = {}
        self.epoch: dict[str, int] = {}
        self.counts = dict.fromkeys(STATES, 0)
        self.running: OrderedDict[str, None] = OrderedDict()  # in start order
        self.finished: OrderedDict[str, None] = OrderedDict()  # latest last
        self.best: tuple[float, str] | None = None
        self.t0 = time.monotonic()
        self.epochs_done = 0
        self.epochs_skipped = 0  # epochs a trial that ended early (done or failed) will never run
        self.live: Live | None = None
        self._lock = threading.Lock()  # events (the driver) against redraws (rich's refresh thread)

    # -- context -----------------------------------------------------------------------------
    def __enter__(self) -> "ProgressSink":
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=2, transient=False, get_renderable=self._render)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.refresh()
            self.live.__exit__(*exc)

    # -- bookkeeping (O(1) per event) ----------------------------------------------------------
    def _set(self, trial_id: str, state: str) -> None:
        with self._lock:
            self._set_locked(trial_id, state)

    def _set_locked(self, trial_id: str, state: str) -> None:
        old = self.state.get(trial_id)
        if old is not None:
            self.counts[old] -= 1
            if old == "running":
                self.running.pop(trial_id, None)
            else:
                self.finished.pop(trial_id, None)
                self.epochs_skipped -= self.epochs - self.epoch.get(trial_id, 0)  # started again
        self.state[trial_id] = state
        self.counts[state] += 1
        if state == "running":
            self.running[trial_id] = None
        else:
            self.finished[trial_id] = None
            self.epochs_skipped += self.epochs - self.epoch.get(trial_id, 0)

    # -- TrialSink ---------------------------------------------------------------------------
    def start(self, study: str, trial_id: str) -> None:
        self.inner.start(study, trial_id)
        self.epoch[trial_id] = 0
        self._set(trial_id, "running")
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
        self._set(trial_id, "failed" if error else "done")
        last = (error or "").strip().splitlines()[-1:] if error else []
        self._event(f"{'FAILED' if error else 'done  '} {trial_id}  {self.labels.get(trial_id, '')}"
                    + (f"  {last[0]}" if last else ""))

    # -- display -----------------------------------------------------------------------------
    def _event(self, line: str) -> None:
        if self.live is None:  # a log: one line per event (plain text, no control sequences from labels)
            self.console.file.write(f"[ablate] {strip_controls(line, keep_newlines=False)}\n")
            self.console.file.flush()

    def _eta(self) -> str:
        remaining = self.n_trials * self.epochs - self.epochs_done - self.epochs_skipped
        if self.epochs_done == 0:
            return "?"
        per_epoch = (time.monotonic() - self.t0) / self.epochs_done
        return f"{max(0, remaining) * per_epoch / 60:.1f} min (upper bound; trials run in parallel)"

    def _rows(self, limit: int) -> list[str]:
        """The trials to show: every running one, then the latest finished (newest first), ``limit`` in all."""
        rows = list(self.running)[:limit]
        for tid in reversed(self.finished):
            if len(rows) >= limit:
                break
            rows.append(tid)
        return rows

    def _render(self) -> Table:
        limit = max(3, self.console.size.height - 8)  # title, header, caption and borders
        with self._lock:
            counts = dict(self.counts)
            shown = [(tid, self.state[tid], self.epoch.get(tid, 0)) for tid in self._rows(limit)]
        t = Table(title=f"{self.plan.study.name}: {self.n_trials - sum(counts.values())} pending, "
                        f"{counts['running']} running, {counts['done']} done, {counts['failed']} failed",
                  title_justify="left")
        t.add_column("trial")
        t.add_column("arm")
        t.add_column("status")
        t.add_column("epoch", justify="right")
        for tid, state, epoch in shown:
            t.add_row(tid, self.labels.get(tid, ""), state, f"{epoch}/{self.epochs}")
        hidden = sum(counts.values()) - len(shown)
        best = f"{self.metric} {self.best[0]:.2f} ({self.best[1]})" if self.best else "–"
        t.caption = (f"{f'{hidden} more finished not shown   ' if hidden else ''}best: {best}   "
                     f"elapsed {time.monotonic() - self.t0:.0f}s   ETA {self._eta()}")
        return t
