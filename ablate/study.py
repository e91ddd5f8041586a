"""The one schema of a study file, and loading it with errors a researcher can act on.

A study file is YAML validated by pydantic. Profiles (``paper``, ``demo``, ...) are partial
overrides deep-merged onto the base before validation, so every profile is a complete study.
All profiles are validated at load time: a typo in ``paper`` fails even when running ``demo``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class StudyError(Exception):
    """A study file is wrong: names the file, the field and what was expected."""

    def __init__(self, file: str | Path, field: str, expected: str):
        self.file, self.field, self.expected = str(file), field, expected
        super().__init__(f"{self.file}: {field}: {expected}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """A model from the registry (timm's, with ablate's models registered on import)."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class RecipeSpec(_Strict):
    """Training configuration. ``preset`` names an Appendix A recipe (``ablate recipes``); every
    field given in the study overrides the preset's value.

    Batch semantics: ``batch_size`` is per device and ``gpus`` the device count the recipe was
    designed for, so the recipe's total batch is ``batch_size x gpus``. A trial with fewer devices
    keeps that total by gradient accumulation (``batch_policy: accumulate``) or scales the lr
    linearly (``scale_lr``); expansion resolves this into ``accum_steps`` / ``lr`` in the trial."""

    preset: str | None = None
    epochs: int = Field(default=100, ge=1)
    batch_size: int = Field(default=32, ge=1, description="per device")
    gpus: int = Field(default=1, ge=1, description="devices the recipe was designed for")
    batch_policy: Literal["accumulate", "scale_lr"] = "accumulate"
    accum_steps: int = Field(default=1, ge=1, description="resolved at expansion; do not set by hand")
    opt: str = "sgd"
    lr: float = Field(default=0.1, gt=0)
    momentum: float = 0.9
    weight_decay: float = Field(default=4e-5, ge=0)
    layer_decay: float | None = Field(default=None, gt=0, le=1, description="stage-wise lr decay (timm)")
    sched: str = "cosine"
    warmup_epochs: int = Field(default=5, ge=0)
    warmup_lr: float = Field(default=1e-6, ge=0)
    min_lr: float = Field(default=0.0, ge=0)
    auto_augment: str | None = Field(default=None, description="timm RandAugment string, e.g. rand-m9-mstd0.5-inc1")
    mixup: float = Field(default=0.0, ge=0)
    cutmix: float = Field(default=0.0, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    re_prob: float = Field(default=0.0, ge=0, le=1, description="random erasing probability")
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    ema_momentum: float | None = Field(default=None, gt=0, lt=1, description="EMA momentum (decay = 1 - m)")
    amp: Literal["auto", "none", "bf16", "fp16"] = Field(default="auto", description="auto: bf16 on CUDA, none on CPU")
    channels_last: bool = True
    compile: bool = False
    max_steps_per_epoch: int | None = Field(default=None, ge=1, description="cap for smoke runs")
    workers: int = Field(default=0, ge=0, description="data-loader processes (speed only: not in the trial id)")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        from ablate.recipes import resolve

        if isinstance(data, dict) and "resolution" in data:
            raise ValueError("resolution: not a training setting; the input size is dataset.image_size "
                             "(`ablate recipes show NAME` gives each recipe's paper resolution)")
        if isinstance(data, dict) and data.get("preset") is not None:
            return resolve(data["preset"], data)
        return data


class DatasetSpec(_Strict):
    """``fashion_mnist`` (idx files) or ``folder`` (ImageNet layout: root/train/<class>/*, root/val/...)."""

    name: Literal["fashion_mnist", "folder"]
    root: str | None = None
    image_size: int = Field(default=224, ge=8)
    train_subset: int | None = Field(default=None, ge=1)
    val_subset: int | None = Field(default=None, ge=1)


class ResourceSpec(_Strict):
    """Per trial. With ``workers > 1`` the trial is one DDP job (Ray Train's TorchTrainer inside the
    Tune trial) and ``cpus``/``gpus`` are per worker."""

    cpus: float = Field(default=1, gt=0)
    gpus: float = Field(default=0, ge=0)
    workers: int = Field(default=1, ge=1, description="DDP workers per trial (several GPUs or nodes)")
    retries: int = Field(default=0, ge=0, description="retries of a failed trial, from its last checkpoint")


class MetricSpec(_Strict):
    name: str = "top1"
    mode: Literal["max", "min"] = "max"


class ColumnSpec(_Strict):
    """One table column: ``source`` is a config path (``model.kwargs.kernel_size``), a metric
    (``metric:top1``), ``params``, ``flops`` or a derived value (``derived:max_rf``).
    ``format`` is a Python format of ``v`` or ``human`` (4.0M / 15.3G); list values (per-stage
    kernel sizes) are formatted element-wise and joined with '-' (Table 11's ``31-29-27-13``)."""

    header: str
    source: str
    format: str | None = Field(default=None, description="Python format, e.g. '{v}x{v}'")
    dash_if: Any = Field(default=None, description="render '-' when the value equals this")
    group: str | None = Field(default=None, description="grouped header above this column, e.g. 'ImageNet'")
    labels: dict[Any, str] = Field(default_factory=dict, description="value -> text, e.g. convnext_tiny: ConvNeXt-T")
    best: Literal["max", "min", "none"] | None = Field(
        default=None, description="bold the best arm; default: the study metric's mode for metric columns")
    delta: bool | None = Field(
        default=None, description="add a Δ-vs-baseline column; default: only the study's metric")


class TableSpec(_Strict):
    columns: list[ColumnSpec] = Field(min_length=1)
    baseline: dict[str, Any] | None = None
    notes: list[str] = Field(default_factory=list)
    paper: list[dict[str, Any]] = Field(default_factory=list, description="the paper's rows, shown beside")


class AxesSpec(_Strict):
    """``grid``: every combination. ``zip``: groups of axes that vary together (equal lengths).
    ``exclude``: partial assignments whose matching trials are dropped."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: list[dict[str, list[Any]]] = Field(default_factory=list)
    exclude: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("grid")
    @classmethod
    def _grid_nonempty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for k, v in grid.items():
            if not v:
                raise ValueError(f"axis '{k}' has no values; give at least one")
        return grid

    @field_validator("zip")
    @classmethod
    def _zip_equal(cls, groups: list[dict[str, list[Any]]]) -> list[dict[str, list[Any]]]:
        for g in groups:
            lengths = {k: len(v) for k, v in g.items()}
            if not g or len(set(lengths.values())) != 1 or 0 in lengths.values():
                raise ValueError(f"zipped axes must be non-empty lists of equal length, got lengths {lengths}")
        return groups


class InitFrom(_Strict):
    """Fine-tune from another study's trial: by its id, or by its axis values (``match``)."""

    study: str
    trial: str | None = Field(default=None, description="trial id, as `ablate plan` prints it")
    match: dict[str, Any] | None = Field(default=None, description="axis values, e.g. {model.kwargs.kernel_size: 13}")

    @model_validator(mode="after")
    def _one_way(self) -> "InitFrom":
        if (self.trial is None) == (self.match is None):
            raise ValueError("init_from: give exactly one of 'trial' (an id) or 'match' (axis values)")
        return self


class ArtifactsSpec(_Strict):
    """What each trial keeps in the artifact store (``--artifacts`` / ``ABLATE_ARTIFACTS``) once it
    completes. While a trial runs, its latest epoch checkpoint is always kept, so a crash resumes it.
    ``final``: the last epoch's weights (what ``init_from`` loads); ``best``: the weights of the epoch
    with the best ``metric``; ``last_checkpoint``: the full training state of the last epoch (to
    extend training later). ``[]`` keeps nothing. Not part of the trial id."""

    keep: list[Literal["final", "best", "last_checkpoint"]] = Field(default_factory=lambda: ["final"])


class Study(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    model: ModelSpec
    axes: AxesSpec = Field(default_factory=AxesSpec)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    recipe: RecipeSpec = Field(default_factory=RecipeSpec)
    dataset: DatasetSpec
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    metric: MetricSpec = Field(default_factory=MetricSpec)
    table: TableSpec | None = None
    init_from: InitFrom | None = None
    artifacts: ArtifactsSpec = Field(default_factory=ArtifactsSpec)
    profile: str | None = Field(default=None, description="set by the loader, not in files")

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_int(cls, v: Any) -> Any:
        return list(range(v)) if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _known_model(self) -> "Study":
        from ablate.models import model_exists

        if not model_exists(self.model.name):
            raise ValueError(f"model.name: unknown model '{self.model.name}'; `ablate models` lists them")
        return self


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``; dicts merge, everything else replaces."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _describe(err: dict[str, Any], prefix: str) -> tuple[str, str]:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check spelling; unknown keys are errors)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif "input" in err and err["type"] not in ("value_error",):
        msg = f"{msg} (got {err['input']!r})"
    msg = msg.removeprefix("Value error, ")
    # model_validator errors carry their own field name inside the message
    if not loc and ": " in msg:
        loc, msg = msg.split(": ", 1)
    return prefix + (loc or "<top level>"), msg


def _validate(raw: dict[str, Any], path: Path, prefix: str) -> Study:
    try:
        return Study.model_validate(raw)
    except ValidationError as e:
        errs = e.errors()
        field, expected = _describe(errs[0], prefix)
        if len(errs) > 1:
            more = "; ".join("%s: %s" % _describe(x, prefix) for x in errs[1:4])
            expected += f" (also: {more})"
        raise StudyError(path, field, expected) from None


def read_raw(path: str | Path) -> dict[str, Any]:
    """Read the YAML mapping of a study file, turning every failure into a StudyError."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(path, "<file>", "a readable study file (no such file)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
        raise StudyError(path, where, f"valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(raw, dict):
        raise StudyError(path, "<top level>", "a mapping with keys name, model, dataset, ...")
    return raw


def load_study(path: str | Path, profile: str | None = None) -> Study:
    """Load and validate a study file with an optional profile applied.

    Every profile is validated too, so errors surface before any compute is spent.
    """
    path = Path(path)
    raw = read_raw(path)
    profiles = raw.pop("profiles", {}) or {}
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise StudyError(path, "profiles", "a mapping of profile name to a mapping of overrides")
    if "profile" in raw:
        raise StudyError(path, "profile", "unknown key (profiles are chosen with --profile)")
    base = _validate(raw, path, "")
    studies = {None: base}
    for name, override in profiles.items():
        studies[name] = _validate(deep_merge(raw, override), path, f"profiles.{name}.")
    if profile not in studies:
        known = ", ".join(sorted(str(k) for k in studies if k)) or "none"
        raise StudyError(path, "--profile", f"one of the file's profiles ({known}), got '{profile}'")
    study = studies[profile]
    study.profile = profile
    return study


def profile_names(path: str | Path) -> list[str]:
    return sorted((read_raw(path).get("profiles") or {}).keys())
