"""The driver-side Tune callback (part of the runner; kept in its own module so Tune pickles the
class by reference: it only holds the study name and a key into ``runner._SINKS``)."""

from __future__ import annotations

import time
from typing import Any

from ray import tune

from ablate import runner


class StoreCallback(tune.Callback):
    """Every trial event goes to the study's sink, in order, on the driver."""

    def __init__(self, study: str, sink_key: str, resources: dict[str, float] | None = None):
        self.study, self.key = study, sink_key
        self.resources = resources or {"cpus": 1, "gpus": 0, "workers": 1}
        self.started: dict[str, float] = {}
        self.errors: dict[str, dict[str, str]] = {}
        self.placements: dict[str, list[dict[str, Any]]] = {}  # every attempt's node, in order

    @property
    def sink(self) -> "runner.TrialSink":
        return runner._SINKS[self.key]

    @staticmethod
    def _id(trial: Any) -> str:
        return trial.config["trial"]["id"]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tid = self._id(trial)
        if tid not in self.started:  # a retry resumed from its checkpoint keeps its earlier epochs
            from ablate.provenance import code

            self.started[tid] = time.time()
            self.sink.start(self.study, tid)
            self.sink.update_provenance(self.study, tid, {**code(), **self.resources})

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        tid = self._id(trial)
        if result.get(runner._ENV_KEY):
            self.sink.update_provenance(self.study, tid, dict(result[runner._ENV_KEY]))
        if result.get(runner._PLACEMENT_KEY):  # a (re)started attempt: where it runs now
            where = dict(result[runner._PLACEMENT_KEY])
            placements = self.placements.setdefault(tid, [])
            placements.append(where)
            self.sink.update_provenance(self.study, tid, {"ray_node_id": where["node_id"],
                                                          "placements": [dict(x) for x in placements]})
        if result.get(runner._ERROR_KEY):
            self.errors[tid] = dict(result[runner._ERROR_KEY])
        if result.get(runner._DONE_KEY):  # training ended: an error of an earlier, retried attempt is history
            self.errors.pop(tid, None)
            done = result[runner._DONE_KEY]
            values: dict[str, Any] = {"artifact_bytes": int(done["bytes"])}
            if self.placements.get(tid) and "ended_at" in done:
                self.placements[tid][-1]["ended_at"] = float(done["ended_at"])
                values["placements"] = [dict(x) for x in self.placements[tid]]
            self.sink.update_provenance(self.study, tid, values)
        metrics = dict(result.get(runner._REPORT_KEY) or {})
        if metrics:
            epoch = int(metrics.pop("epoch", result.get("training_iteration", 1) - 1))
            self.sink.add_metrics(self.study, tid, epoch, metrics)

    def _finish(self, trial: Any, error: dict[str, str] | None) -> None:
        tid = self._id(trial)
        t0 = self.started.pop(tid, None)
        if t0 is not None:  # device-hours: wall time x the devices (GPUs, else CPU workers) it held
            hours = (time.time() - t0) / 3600
            r = self.resources
            devices = r["workers"] * (r["gpus"] if r["gpus"] else 1)
            self.sink.update_provenance(self.study, tid, {"wall_hours": hours, "device_hours": hours * devices,
                                                          "device_kind": "gpu" if r["gpus"] else "cpu"})
        self.sink.finish(self.study, tid, error=error["text"] if error else None,
                         error_kind=error.get("kind") if error else None)
        runner._FINISHED.setdefault(self.key, set()).add(tid)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, self.errors.pop(self._id(trial), None))  # a recurring error ends the trial "complete"

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = self.errors.pop(self._id(trial), None) or {"text": runner._error_text(trial), "kind": "transient"}
        self._finish(trial, error)
