"""Model configs checked and measured before: their params and FLOPs, so a run of them imports no torch.

``ablate plan`` and ``ablate run`` check every distinct model of a study (timm's registry, a build on
the meta device) and count its params and FLOPs; that needs torch, timm and torchvision, seconds of
imports that the driver would pay only to plan while the trial worker imports them again (and
``ablate models`` counts the whole zoo: ~8 s). Both are
pure functions of the model section, the dataset's classes and channels, the image size and the code
(ablate's own sources, torch, timm, torchvision). So each result is kept in one small JSON file in
ablate's state folder, beside the journal and the local Ray head's record: ``model-costs/<code>.json`` in
``$ABLATE_STATE_DIR``, else ``$XDG_CACHE_HOME/ablate``, else ``~/.cache/ablate``, one file per code
fingerprint, so that two checkouts used in turn (a branch and main, a benchmark's before and after) do not
empty each other's; the newest ``KEEP_CODES`` files stay. It is a cache of this machine's code, not a
result: deleting it costs one plan's measurement; ``ABLATE_MODEL_COSTS=0`` turns it off.

An entry says: this model config passed ``validate.check_model`` and measured (params, FLOPs); a
zoo entry (``ablate models``, its own keys): this model section's deploy form counted (params, FLOPs); a
check entry: a recipe's optimizer, scheduler and augmentation passed ``validate.check_recipe``, or a
model name passed ``validate.model_name_problem`` (the study file's own check). A file
written by other code (any change to ablate's sources or to those packages' versions), unreadable
or of another shape is ignored as a whole and replaced at the next save; an entry that is not two
non-negative integers is ignored. Configs that read files (``pretrained``, ``pretrained_cfg_overlay``,
``checkpoint_path``) are never cached: their check depends on what is on disk now.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

FOLDER = "model-costs"
KEEP_CODES = 8  # files of other code fingerprints kept beside this one's (the newest)
FORMAT = 1
MAX_ENTRIES = 4096  # the oldest go first; a lab's studies have a few hundred distinct models at most
UNCACHED_KWARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path")
PACKAGES = ("torch", "timm", "torchvision")


def cache_path() -> Path:
    """This code's file: ``model-costs/<fingerprint>.json`` in ``$ABLATE_STATE_DIR``, else under
    ``$XDG_CACHE_HOME/ablate`` or ``~/.cache/ablate``."""
    from ablate.state import state_dir

    return state_dir() / FOLDER / f"{code_fingerprint()[:16]}.json"


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 of ablate's sources (every .py file of the package, by path and content) and the versions
    of Python, torch, timm and torchvision: what a model's build, check and count depend on."""
    from importlib.metadata import PackageNotFoundError, version

    from ablate.state import hash_sources

    h = hash_sources(hashlib.sha256())
    for pkg in PACKAGES:
        try:
            v = version(pkg)
        except PackageNotFoundError:
            v = "-"
        h.update(f"{pkg}={v}\0".encode())
    h.update(f"python={sys.version_info[:2]}".encode())
    return h.hexdigest()


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def model_key(config: dict[str, Any]) -> str | None:
    """What a trial config's params and FLOPs depend on (the model section, the dataset's classes and
    channels as planning reads them, the image size), hashed; None when it must not be cached."""
    from ablate.data_info import dataset_info

    model = config.get("model") or {}
    kwargs = model.get("kwargs") or {}
    if not isinstance(kwargs, dict) or any(k in kwargs for k in UNCACHED_KWARGS):
        return None
    default = kwargs.get("num_classes", 1000)
    try:
        classes, chans = dataset_info(config["dataset"], default)
    except (OSError, ValueError, KeyError, TypeError):  # the checks say what is wrong
        return None
    return _digest(["model", model, classes, chans, config["dataset"].get("image_size")])


def deployed_key(model: dict[str, Any], classes: int, chans: int, image_size: int) -> str | None:
    """What ``zoo.measure_deployed`` of a model section depends on, hashed (``ablate models``: a count,
    no check, so never the key of a plan's entry); None when it must not be cached."""
    kwargs = model.get("kwargs") or {}
    if not isinstance(kwargs, dict) or any(k in kwargs for k in UNCACHED_KWARGS):
        return None
    return _digest(["deployed", model, classes, chans, image_size])


def check_key(kind: str, value: Any) -> str:
    """A check that passed: ``("recipe", (opt, sched, auto_augment))`` or ``("name", "resnet50.a1_in1k")``."""
    return _digest([kind, value])


def recipe_value(recipe: dict[str, Any]) -> list[Any]:
    """What ``validate.check_recipe`` reads of a recipe."""
    return [recipe.get("opt"), recipe.get("sched"), recipe.get("auto_augment")]


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


class ModelCosts:
    """The cache file's entries for this code; ``save`` merges what was added into the file."""

    def __init__(self, path: Path | None = None, enabled: bool | None = None):
        self.enabled = os.environ.get("ABLATE_MODEL_COSTS", "1") != "0" if enabled is None else enabled
        self.path = path or cache_path()
        self.models: dict[str, tuple[int, int]] = {}
        self.checked: set[str] = set()
        self._new_models: dict[str, tuple[int, int]] = {}
        self._new_checked: set[str] = set()
        if self.enabled:
            self.models, self.checked = self._read()

    def _read(self) -> tuple[dict[str, tuple[int, int]], set[str]]:
        """This code's entries in the file; nothing from a missing, unreadable or foreign file."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}, set()
        if (not isinstance(data, dict) or data.get("format") != FORMAT or data.get("code") != code_fingerprint()
                or not isinstance(data.get("models"), dict) or not isinstance(data.get("checked"), list)):
            return {}, set()
        models = {k: (v[0], v[1]) for k, v in data["models"].items()
                  if isinstance(v, list) and len(v) == 2 and _count(v[0]) and _count(v[1])}
        return models, {r for r in data["checked"] if isinstance(r, str)}

    def model(self, config: dict[str, Any]) -> tuple[int, int] | None:
        """(params, FLOPs) of a config checked and measured before, else None."""
        return self._get(model_key(config) if self.enabled else None)

    def put_model(self, config: dict[str, Any], costs: tuple[int, int]) -> None:
        """A config that passed the model check and was measured."""
        self._put(model_key(config) if self.enabled else None, costs)

    def deployed(self, model: dict[str, Any], classes: int, chans: int, image_size: int) -> tuple[int, int] | None:
        """(params, FLOPs) of a model section's deploy form counted before (``ablate models``), else None."""
        return self._get(deployed_key(model, classes, chans, image_size) if self.enabled else None)

    def put_deployed(self, model: dict[str, Any], classes: int, chans: int, image_size: int,
                     costs: tuple[int, int]) -> None:
        self._put(deployed_key(model, classes, chans, image_size) if self.enabled else None, costs)

    def _get(self, key: str | None) -> tuple[int, int] | None:
        return self.models.get(key) if key else None

    def _put(self, key: str | None, costs: tuple[int, int]) -> None:
        if key and self.models.get(key) != tuple(costs):
            self.models[key] = self._new_models[key] = (int(costs[0]), int(costs[1]))

    def passed(self, kind: str, value: Any) -> bool:
        """Whether a check of ``kind`` ("recipe", "name") passed for ``value`` before."""
        return self.enabled and check_key(kind, value) in self.checked

    def put_passed(self, kind: str, value: Any) -> None:
        key = check_key(kind, value)
        if self.enabled and key not in self.checked:
            self.checked.add(key)
            self._new_checked.add(key)

    def save(self) -> None:
        """Merge the new entries into the file (re-read first: another plan may have added some) and
        replace it atomically. A state folder that cannot be written only means no cache."""
        if not (self.enabled and (self._new_models or self._new_checked)):
            return
        models, checked = self._read()
        models.update(self._new_models)
        checked |= self._new_checked
        keep = list(models.items())[-MAX_ENTRIES:]
        data = {"format": FORMAT, "code": code_fingerprint(), "models": {k: list(v) for k, v in keep},
                "checked": sorted(checked)[-MAX_ENTRIES:]}
        from ablate.state import write_atomic

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(data))
        except OSError:
            return
        self._new_models, self._new_checked = {}, set()
        _prune(self.path)


def _prune(path: Path) -> None:
    """Drop the files of all but the ``KEEP_CODES`` newest other code fingerprints."""
    from ablate.state import beyond_newest

    try:
        old = beyond_newest((f for f in path.parent.glob("*.json") if f != path), KEEP_CODES)
    except OSError:
        return
    for f in old:
        f.unlink(missing_ok=True)


_SHARED: dict[tuple[Path, bool], ModelCosts] = {}


def shared() -> ModelCosts:
    """The process's view of the cache file (read once), which the study file's model-name check and
    ``plan.make_plan`` share; ``make_plan`` saves it."""
    try:
        path = cache_path()
    except RuntimeError:  # no home directory to find: no cache
        path = Path(os.devnull)
    key = (path, os.environ.get("ABLATE_MODEL_COSTS", "1") != "0" and path != Path(os.devnull))
    if key not in _SHARED:
        _SHARED[key] = ModelCosts(key[0], key[1])
    return _SHARED[key]
