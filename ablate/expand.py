"""Expand a study into trials: grid x zipped groups x seeds, minus exclusions.

Each trial's id is a hash of the part of its resolved config that changes its numbers (model,
recipe, dataset, seed, init_from), so the same file gives the same ids on any machine and a rerun
recognises the trials it already finished. Speed-only settings stay in the config (the trainer needs
them) but out of the id: see ``SPEED_ONLY`` and docs/trial-identity.md.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ablate.axes import assignments, excluded, get_path, set_path  # noqa: F401  (re-exported)
from ablate.study import DatasetSpec, RecipeSpec, Study, StudyError, max_trials

TRIAL_SECTIONS = ("model", "recipe", "dataset")


@dataclass(frozen=True)
class Trial:
    """One training job: the resolved config and the axis values that distinguish it."""

    id: str
    params: dict[str, Any]
    config: dict[str, Any] = field(repr=False)

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def arm(self) -> tuple[tuple[str, str], ...]:
        """The axis values without the seed: trials of one arm differ only by seed."""
        return tuple(sorted((k, json.dumps(v)) for k, v in self.params.items() if k != "seed"))


# Config paths that change how fast a trial runs, never what it computes. A trial's id leaves them out,
# so changing one reuses the trials already stored. (Resources are not in the config at all; the
# effective batch they imply is, as recipe.accum_steps / recipe.lr.)
SPEED_ONLY: tuple[str, ...] = ("recipe.workers",)
# Paths that older versions put in configs and that never acted (recipe.resolution: the input size is
# dataset.image_size). Dropped from the id so databases written by those versions keep their trials.
RETIRED: tuple[str, ...] = ("recipe.resolution",)


# Paths added after trials were stored, with their defaults: left out of the id while at the default,
# so every trial stored before they existed keeps its id (segmentation: model.task and its dataset fields).
ADDED_DEFAULTS: dict[str, Any] = {"model.task": "classification", "model.head": {}, "recipe.warmup_steps": None,
                                  "dataset.num_classes": None, "dataset.reduce_zero_label": None}


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a trial's config that its id hashes: everything but SPEED_ONLY and RETIRED paths
    (and ADDED_DEFAULTS paths at their defaults)."""
    out = copy.deepcopy(config)
    for path in SPEED_ONLY + RETIRED + tuple(ADDED_DEFAULTS):
        *parents, leaf = path.split(".")
        node: Any = out
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node and (path not in ADDED_DEFAULTS or node[leaf] == ADDED_DEFAULTS[path]):
            node.pop(leaf)
    return out


def trial_id(config: dict[str, Any]) -> str:
    """12 hex digits of the sha256 of ``identity(config)`` as canonical JSON."""
    blob = json.dumps(identity(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def resolve_batch(recipe: dict[str, Any], trial_gpus: float, workers: int = 1) -> None:
    """Keep the recipe's total batch (batch_size x recipe gpus) on a trial with fewer devices:
    accumulate gradients, or scale the lr linearly. A CPU worker counts as one device."""
    devices = workers * max(1, math.ceil(trial_gpus))
    wanted = int(recipe.get("gpus", 1))
    recipe["accum_steps"] = 1
    if devices >= wanted:
        return
    if recipe.get("batch_policy", "accumulate") == "accumulate":
        recipe["accum_steps"] = math.ceil(wanted / devices)
    else:
        recipe["lr"] = recipe["lr"] * devices / wanted


def _check_axis(path: str, study: Study, file: str) -> None:
    head, _, rest = path.partition(".")
    if head not in TRIAL_SECTIONS or not rest:
        raise StudyError(file, f"axes: '{path}'", f"a path starting with one of {', '.join(TRIAL_SECTIONS)} "
                         "(e.g. model.kwargs.kernel_size, recipe.lr, dataset.image_size)")
    if head == "model" and not (rest == "name" or rest.startswith("kwargs.")):
        raise StudyError(file, f"axes: '{path}'", "model.name or model.kwargs.<argument>")
    if head in ("recipe", "dataset"):
        spec = RecipeSpec if head == "recipe" else DatasetSpec
        if rest not in spec.model_fields:
            raise StudyError(file, f"axes: '{path}'", f"a field of {head} ({', '.join(spec.model_fields)})")


def _assignments(study: Study) -> list[dict[str, Any]]:
    return assignments(study.axes)


def _excluded(assign: dict[str, Any], study: Study) -> bool:
    return excluded(assign, study.axes)


def count_trials(study: Study) -> int:
    """Trials the axes and seeds give before exclusions, from the axis lengths alone (nothing is
    expanded, so a grid of 10^9 combinations is counted instantly)."""
    n = len(study.seeds)
    for values in study.axes.grid.values():
        n *= len(values)
    for group in study.axes.zip:
        n *= len(next(iter(group.values())))
    return n


def expand(study: Study, file: str | Path = "<study>") -> list[Trial]:
    """All trials of a study, in a stable order. Raises StudyError for unusable axes."""
    file = str(file)
    limit, n = max_trials(), count_trials(study)
    if n > limit:
        raise StudyError(file, "axes", f"at most {limit} trials (set ABLATE_MAX_TRIALS to allow more); the grid, "
                         f"zipped groups and seeds give {n}")
    names = list(study.axes.grid) + [k for g in study.axes.zip for k in g]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise StudyError(file, "axes", f"each axis once; repeated: {', '.join(sorted(dupes))}")
    for name in names:
        _check_axis(name, study, file)
    for i, ex in enumerate(study.axes.exclude):
        unknown = [k for k in ex if k not in names]
        if unknown:
            raise StudyError(file, f"axes.exclude[{i}]", f"axes declared in grid or zip; unknown: {unknown}")

    base = {s: getattr(study, s).model_dump(mode="json") for s in TRIAL_SECTIONS}
    if study.init_from is not None:  # the source is part of what the trial is
        base["init_from"] = study.init_from.model_dump(mode="json", exclude_none=True)
    trials: list[Trial] = []
    for assign in _assignments(study):
        if _excluded(assign, study):
            continue
        for seed in study.seeds:
            config = copy.deepcopy(base)
            for path, value in assign.items():
                set_path(config, path, value)
            for section, spec in (("recipe", RecipeSpec), ("dataset", DatasetSpec)):
                try:
                    config[section] = spec.model_validate(config[section]).model_dump(mode="json")
                except ValidationError as e:
                    err = e.errors()[0]
                    loc = ".".join(str(p) for p in err["loc"])
                    raise StudyError(file, f"axes: {section}.{loc}", f"{err['msg']} (got {err.get('input')!r})") from None
            resolve_batch(config["recipe"], study.resources.gpus, study.resources.workers)
            config["seed"] = seed
            params = dict(assign, seed=seed)
            trials.append(Trial(id=trial_id(config), params=params, config=config))
    if not trials:
        raise StudyError(file, "axes", "at least one trial; the grid is empty after exclusions")
    ids = [t.id for t in trials]
    if len(set(ids)) != len(ids):
        raise StudyError(file, "axes", "distinct trials; two assignments resolve to the same config "
                         f"(speed-only settings such as {', '.join(SPEED_ONLY)} are not part of a trial)")
    return trials
