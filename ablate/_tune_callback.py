"""The driver-side Tune callback (part of the runner; kept in its own module so Tune pickles the
class by reference: it only holds the study name and a key into ``runner._SINKS``)."""

from __future__ import annotations

from typing import Any

from ray import tune

from ablate import runner


class StoreCallback(tune.Callback):
    """Every trial event goes to the study's sink, in order, on the driver."""

    def __init__(self, study: str, sink_key: str):
        self.study, self.key = study, sink_key
        self.started: set[str] = set()

    @property
    def sink(self) -> "runner.TrialSink":
        return runner._SINKS[self.key]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tid = trial.config["trial"]["id"]
        if tid not in self.started:  # a retry restored from its checkpoint keeps its earlier epochs
            self.started.add(tid)
            self.sink.start(self.study, tid)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        metrics = dict(result.get(runner._REPORT_KEY) or {})
        if metrics:
            epoch = int(metrics.pop("epoch", result.get("training_iteration", 1) - 1))
            self.sink.add_metrics(self.study, trial.config["trial"]["id"], epoch, metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.sink.finish(self.study, trial.config["trial"]["id"])

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.sink.finish(self.study, trial.config["trial"]["id"], error=runner._error_text(trial))
