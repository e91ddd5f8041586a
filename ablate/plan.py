"""What a study will run, before any compute is spent: trials with their params and FLOPs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.analyses.checks import check_analyses
from ablate.data_info import dataset_info
from ablate.expand import Trial, expand
from ablate.model_costs import ModelCosts, shared
from ablate.study import Study, load_study
from ablate.validate import check_plan, measure_checked


@dataclass
class PlannedTrial:
    trial: Trial
    n_params: int
    flops: int  # multiply-adds of one image at the dataset's image size


@dataclass
class Plan:
    file: str
    study: Study
    trials: list[PlannedTrial]

    def flops_input(self) -> str | None:
        """The one input every trial's FLOPs are counted at ('224', '2048x512'), or None if they differ."""
        from ablate.flops import flops_input

        inputs = {flops_input(p.trial.config) for p in self.trials}
        return inputs.pop() if len(inputs) == 1 else None

    def rows(self) -> list[dict[str, Any]]:
        return [{"trial_id": p.trial.id, **p.trial.params, "params": p.n_params, "flops": p.flops}
                for p in self.trials]


def measure(config: dict[str, Any]) -> tuple[int, int]:
    """(params, multiply-adds) of the model a trial config builds, at its dataset's input.

    Counted on the deploy form (``reparam.merge``: re-param branches and BNs merged into single
    convs), as the paper reports them; the model is built on the meta device when it can be."""
    model_cfg = config["model"]
    classes, chans = dataset_info(config["dataset"], int(model_cfg.get("kwargs", {}).get("num_classes", 1000)))
    if model_cfg.get("task") == "segmentation":  # UperNet at the evaluation scale: 4s x s (Table 11: 2048x512,
        # width x height; ablate.flops.flops_input says it so in headers)
        from ablate.seg_zoo import measure_upernet

        size = int(config["dataset"]["image_size"])
        counts = measure_upernet(model_cfg, classes, chans, (size, 4 * size))
        return counts.params, counts.flops
    from ablate.zoo import measure_deployed

    return measure_deployed(model_cfg, classes, chans, int(config["dataset"]["image_size"]))


def make_plan(path: str | Path, profile: str | None = None, known: ModelCosts | None = None) -> Plan:
    """Load, validate and expand a study file, then measure each distinct model once.

    Models checked and measured before with this code come from ``known`` (default: the cache file of
    ``ablate.model_costs``), so planning them imports neither torch nor timm; new ones are checked and
    measured as always, then added to it."""
    study = load_study(path, profile)
    trials = expand(study, path)
    known = known if known is not None else shared()
    check_plan(study, [t.config for t in trials], str(path), known)  # before any compute: names, kwargs, formats
    check_analyses(study, [t.config for t in trials], str(path))
    cache: dict[str, tuple[int, int]] = {}
    planned = []
    for t in trials:
        key = json.dumps([t.config["model"], t.config["dataset"]], sort_keys=True)
        if key not in cache:
            cache[key] = known.model(t.config) or measure_checked(measure, t.config, str(path))
            known.put_model(t.config, cache[key])
        planned.append(PlannedTrial(t, *cache[key]))
    known.save()
    return Plan(str(path), study, planned)
