"""Analyses of trained models (the paper's appendices): each one reads a completed trial's stored
weights and returns scalars (stored as metrics of the trial) and arrays (stored beside its
weights). ``ablate analyze`` runs them; ``ablate run`` runs them after training.

An analysis is registered with ``register``: a compute function ``(model, ctx, options) ->
AnalysisResult`` and the names it stores, so the driver knows when it is done (its scalars are
in the database, its arrays in the artifact store, and its result-changing options are the ones
recorded in the trial's provenance). The modules are imported lazily (``get``): this package
imports neither torch nor Ray, so read-only commands stay fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from ablate.artifacts import ArtifactStore

# analysis name -> module that registers it (h6's kernels and shape bias plug in here)
MODULES = {"erf": "ablate.analyses.erf", "kernels": "ablate.analyses.kernels",
           "shape_bias": "ablate.analyses.shape_bias"}
PROVENANCE_KEY = "analyses"  # trial provenance: {name: options that change the result}


@dataclass
class AnalysisResult:
    """What one analysis of one trial gives: scalars (metrics of the trial) and arrays (saved as
    ``<name>.npy`` beside the trial's weights)."""

    scalars: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, "np.ndarray"] = field(default_factory=dict)


@dataclass
class TrialContext:
    """The trial an analysis runs on: its resolved config and where its files are."""

    study: str
    trial_id: str
    config: dict[str, Any]
    device: str
    store: "ArtifactStore"


@dataclass(frozen=True)
class Analysis:
    name: str
    compute: Callable[["nn.Module", TrialContext, Any], AnalysisResult]
    scalars: Callable[[Any], list[str]]  # metric names it stores, given its options
    arrays: Callable[[Any], list[str]]  # file names it stores beside the weights
    speed_only: tuple[str, ...] = ()  # options that change only speed or memory (not re-run for)
    presentation: tuple[str, ...] = ()  # options that change only how results are shown

    def identity(self, options: Any) -> dict[str, Any]:
        """The options that change its result: what a stored result must have been made with."""
        return options.model_dump(mode="json", exclude=set(self.speed_only) | set(self.presentation))


REGISTRY: dict[str, Analysis] = {}


def register(name: str, *, scalars: Callable[[Any], list[str]], arrays: Callable[[Any], list[str]],
             speed_only: tuple[str, ...] = (), presentation: tuple[str, ...] = ()) -> Callable:
    """Decorator: ``@register("erf", scalars=..., arrays=...) def compute(model, ctx, options)``."""

    def deco(fn: Callable[["nn.Module", TrialContext, Any], AnalysisResult]) -> Callable:
        REGISTRY[name] = Analysis(name, fn, scalars, arrays, speed_only, presentation)
        return fn

    return deco


def available(name: str) -> bool:
    """Whether this ablate has the analysis (its module exists), without importing it."""
    import importlib.util

    module = MODULES.get(name)
    return module is not None and importlib.util.find_spec(module) is not None


def get(name: str) -> Analysis:
    """The registered analysis ``name``, importing its module on first use. KeyError if unknown."""
    if name not in REGISTRY:
        if not available(name):
            raise KeyError(f"no analysis '{name}' in this ablate (known: {', '.join(sorted(MODULES))})")
        importlib.import_module(MODULES[name])
    return REGISTRY[name]


def declared_metrics(study: Any) -> set[str]:
    """Metric names the study's declared analyses store (for plan's check of table columns)."""
    out: set[str] = set()
    for name, opts in (study.analyses.declared() if study.analyses else {}).items():
        if available(name):
            out.update(get(name).scalars(opts))
    return out
