"""The one schema of a study file, and loading it with errors a researcher can act on.

A study file is YAML validated by pydantic. Profiles (``paper``, ``demo``, ...) are partial
overrides deep-merged onto the base before validation, so every profile is a complete study.
All profiles are validated at load time: a typo in ``paper`` fails even when running ``demo``.
"""

from __future__ import annotations

import os
import reprlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class StudyError(Exception):
    """A study file is wrong: names the file, the field and what was expected."""

    def __init__(self, file: str | Path, field: str, expected: str):
        self.file, self.field, self.expected = str(file), field, expected
        super().__init__(f"{self.file}: {field}: {expected}")


# Hostile-input bounds: a study file is a few KB; these refuse alias bombs, deep nesting and huge
# strings or numbers in well under a second, before anything expands them.
MAX_FILE_BYTES = 1 << 20  # 1 MiB
MAX_NODES = 50_000  # YAML nodes, counting each use of an alias again (what expansion would create)
MAX_DEPTH = 32  # nesting of mappings and lists
MAX_STRING = 20_000  # characters in one string
MAX_NUMBER_DIGITS = 64  # characters of one number literal (Python refuses ints of > 4300 digits anyway)
MAX_PROFILES = 64
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
NAME_RULE = ("letters, digits, '_', '.', '-', starting with a letter or digit, at most 100 characters "
             "(it becomes a folder name)")
_ALLOWED_TAGS = {"tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "seq", "map", "merge")}
_short_repr = reprlib.Repr()  # error messages quote values, briefly: never a megabyte of them
_short_repr.maxstring, _short_repr.maxother, _short_repr.maxlist, _short_repr.maxdict = 60, 60, 4, 4
_short_repr.maxlevel = 2


def max_trials() -> int:
    """The most trials one study may expand to: $ABLATE_MAX_TRIALS, default 10,000."""
    try:
        return max(1, int(os.environ.get("ABLATE_MAX_TRIALS", "10000")))
    except ValueError:
        return 10_000


def _check_name(v: str) -> str:
    import re

    if not re.fullmatch(NAME_PATTERN, v):
        raise ValueError(f"a name of {NAME_RULE}, got {_short_repr.repr(v)}")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelSpec(_Strict):
    """A model from the registry (timm's, with ablate's models registered on import).

    ``task: segmentation`` makes the model the backbone of a UperNet (``ablate.models.upernet``)
    trained on a segmentation dataset (``ade20k`` or ``seg_folder``) by ``ablate.seg_trainer``."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    task: Literal["classification", "segmentation"] = "classification"
    head: dict[str, Any] = Field(default_factory=dict, description="segmentation: UperNet kwargs (channels: 512, "
                                 "aux_channels: 256, ...); empty: the paper's")


class RecipeSpec(_Strict):
    """Training configuration. ``preset`` names an Appendix A recipe (``ablate recipes``); every
    field given in the study overrides the preset's value.

    Batch semantics: ``batch_size`` is per device and ``gpus`` the device count the recipe was
    designed for, so the recipe's total batch is ``batch_size x gpus``. A trial with fewer devices
    keeps that total by gradient accumulation (``batch_policy: accumulate``) or scales the lr
    linearly (``scale_lr``); expansion resolves this into ``accum_steps`` / ``lr`` in the trial."""

    preset: str | None = None
    epochs: int = Field(default=100, ge=0, description="0: evaluate given weights only (model.kwargs.pretrained "
                        "with pretrained_cfg_overlay.file, or init_from), no training")
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
    warmup_steps: int | None = Field(default=None, ge=0, description="warmup in iterations (segmentation)")
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
    workers: int = Field(default=0, ge=0, le=256, description="data-loader processes (speed only: not in the trial id)")

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


SEGMENTATION_DATASETS = ("ade20k", "seg_folder")


class DatasetSpec(_Strict):
    """``fashion_mnist`` (idx files) or ``folder`` (ImageNet layout: root/train/<class>/*, root/val/...);
    for segmentation ``ade20k`` (ADEChallengeData2016 as released) or ``seg_folder`` (image/mask pairs in
    the same layout, ``num_classes`` given); there ``image_size`` is the training crop (``ablate.seg_data``)."""

    name: Literal["fashion_mnist", "folder", "ade20k", "seg_folder"]
    root: str | None = None
    image_size: int = Field(default=224, ge=8)
    train_subset: int | None = Field(default=None, ge=1)
    val_subset: int | None = Field(default=None, ge=1)
    num_classes: int | None = Field(default=None, ge=1, description="seg_folder: classes in the masks")
    reduce_zero_label: bool | None = Field(
        default=None, description="mask 0 = ignore, classes from 1 (ade20k: always; seg_folder: default false)")


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
    """Without ``columns`` the table shows the study's axes, its metric, Δ and the test against
    ``baseline`` (which may be given alone), Params and FLOPs (see ablate.tables)."""

    columns: list[ColumnSpec] | None = Field(default=None, min_length=1)
    baseline: dict[str, Any] | None = None
    notes: list[str] = Field(default_factory=list)
    paper: list[dict[str, Any]] = Field(default_factory=list, description="the paper's rows, shown beside")
    beside: str | None = Field(default=None, description="a study whose table `ablate table` renders to the right "
                               "of this one, rows joined on the shared leading columns (Table 11's ADE20K half)")
    group: str | None = Field(default=None, description="this half's header group when rendered beside another")


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
    match_axes: list[str] | None = Field(
        default=None, description="config paths each trial matches by its own values, e.g. [model.name, seed]: "
        "every arm fine-tunes from its own source trial (Table 11's ADE20K half from its ImageNet half)")

    @field_validator("study")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return _check_name(v)

    @model_validator(mode="after")
    def _one_way(self) -> "InitFrom":
        if (self.trial is None) == (self.match is None and self.match_axes is None):
            raise ValueError("init_from: give exactly one of 'trial' (an id) or 'match' / 'match_axes' (axis values)")
        return self


class ArtifactsSpec(_Strict):
    """What each trial keeps in the artifact store (``--artifacts`` / ``ABLATE_ARTIFACTS``) once it
    completes. While a trial runs, its latest epoch checkpoint is always kept, so a crash resumes it.
    ``final``: the last epoch's weights (what ``init_from`` loads); ``best``: the weights of the epoch
    with the best ``metric``; ``last_checkpoint``: the full training state of the last epoch (to
    extend training later). ``[]`` keeps nothing. Not part of the trial id."""

    keep: list[Literal["final", "best", "last_checkpoint"]] = Field(default_factory=lambda: ["final"])


class _AnalysisOptions(_Strict):
    """Options every analysis shares: which stored weights of a completed trial it reads."""

    weights: Literal["final", "best"] = Field(
        default="final", description="final: model.pt (the last epoch); best: best.pt (artifacts.keep must keep it)")


class ErfRow(_Strict):
    """One row of Table 10: the arm it describes (axis values), its label, the paper's r (percent,
    one per threshold) when there is one to compare with."""

    label: str = Field(min_length=1, max_length=200)
    match: dict[str, Any] = Field(default_factory=dict, description="axis values of the arm, e.g. {model.name: resnet101}")
    paper: list[float] | None = Field(default=None, description="the paper's r in percent, one per threshold")


class ErfOptions(_AnalysisOptions):
    """Effective receptive field (Appendix B, Table 10), as the official code measures it
    (docs/analyses.md): the mean over the first ``images`` images of ``split`` (resized to
    ``size`` x ``size``) of the positive input gradient of the summed positive centre activations
    of the last feature map; then r at each threshold t by the centred-square search."""

    images: int = Field(default=50, ge=1, le=100_000, description="N: the first N images of the split (paper: 50)")
    size: int = Field(default=1024, ge=8, le=8192, description="S: images resized to S x S (paper: 1024)")
    batch_size: int = Field(default=1, ge=1, le=4096, description="images per backward pass (memory only)")
    split: Literal["val", "train"] = "val"
    thresholds: list[float] = Field(default_factory=lambda: [0.2, 0.3, 0.5, 0.99], min_length=1, max_length=32,
                                    description="t: fractions of the contribution (Table 10: 20/30/50/99%)")
    final_norm: bool = Field(default=False, description="take the feature map after the model's final norm "
                             "(the official code: before it)")
    rows: list[ErfRow] = Field(default_factory=list, max_length=1000,
                               description="labels and paper numbers of the arms, for `ablate table --analysis erf`")

    @field_validator("thresholds")
    @classmethod
    def _fractions(cls, ts: list[float]) -> list[float]:
        from ablate.analyses.names import erf_metric

        bad = [t for t in ts if not 0 < t < 1]
        if bad:
            raise ValueError(f"fractions strictly between 0 and 1 (0.2 = 20%), got {bad[0]}")
        names = [erf_metric(t) for t in ts]
        if len(set(names)) != len(names):
            raise ValueError(f"distinct thresholds, got {ts}")
        return ts

    @model_validator(mode="after")
    def _one_number_per_threshold(self) -> "ErfOptions":
        for i, row in enumerate(self.rows):
            if row.paper is not None and len(row.paper) != len(self.thresholds):
                raise ValueError(f"rows.{i}.paper: one number per threshold ({len(self.thresholds)}), "
                                 f"got {len(row.paper)}")
        return self


class KernelsOptions(_AnalysisOptions):
    """Kernel-weight maps (Appendix F, Fig. 6): a depthwise conv chosen by stage and position, BN
    fused, absolute values summed over channels, rescaled to [0, 1]."""

    stage: int = Field(default=-1, description="which stage (python index; -1: the last, Fig. 6)")
    index: int = Field(default=0, ge=0, description="which stride-1 large depthwise conv of the stage (0: the first)")
    variants: list[Literal["large", "merged"]] = Field(
        default_factory=lambda: ["large", "merged"], min_length=1,
        description="large: the large kernel alone after BN fusion; merged: the small kernel added to its centre")


class ShapeBiasOptions(_AnalysisOptions):
    """Shape bias (Appendix C, Fig. 5) on a cue-conflict folder in the model-vs-human layout."""

    folder: str = Field(min_length=1, description="cue-conflict images (model-vs-human layout); $VARS expand")


class AnalysesSpec(_Strict):
    """Analyses of each completed trial's stored weights (``ablate analyze``; ``ablate run`` runs
    them after training). Results: metrics of the trial, arrays beside its weights."""

    erf: ErfOptions | None = None
    kernels: KernelsOptions | None = None
    shape_bias: ShapeBiasOptions | None = None

    def declared(self) -> dict[str, _AnalysisOptions]:
        """name -> options of every analysis the study declares, in a stable order."""
        return {name: opts for name in ("erf", "kernels", "shape_bias")
                if (opts := getattr(self, name)) is not None}


class Study(_Strict):
    name: str = Field(description=NAME_RULE)
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
    analyses: AnalysesSpec | None = None
    profile: str | None = Field(default=None, description="set by the loader, not in files")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return _check_name(v)

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_int(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            if not 1 <= v <= max_trials():
                raise ValueError(f"a seed count from 1 to {max_trials()} (ABLATE_MAX_TRIALS), got {v}")
            return list(range(v))
        return v

    @model_validator(mode="after")
    def _analyses_have_weights(self) -> "Study":
        for name, opts in (self.analyses.declared() if self.analyses else {}).items():
            if opts.weights not in self.artifacts.keep:
                raise ValueError(f"analyses.{name}.weights: weights that artifacts.keep keeps "
                                 f"({', '.join(self.artifacts.keep) or 'nothing'}); the analysis reads "
                                 f"'{opts.weights}' weights: add it to artifacts.keep")
        return self

    @model_validator(mode="after")
    def _weights_to_evaluate(self) -> "Study":
        """``recipe.epochs: 0`` evaluates (and analyses) weights trained elsewhere, e.g. the released
        checkpoints of Table 10: there must be weights to start from."""
        if self.recipe.epochs == 0 and not (self.model.kwargs.get("pretrained") or self.init_from):
            raise ValueError("recipe.epochs: at least 1, or 0 with weights to evaluate (model.kwargs: "
                             "{pretrained: true, pretrained_cfg_overlay: {file: PATH}}, or init_from)")
        return self

    @model_validator(mode="after")
    def _task_fits_dataset(self) -> "Study":
        seg_data = self.dataset.name in SEGMENTATION_DATASETS
        if seg_data != (self.model.task == "segmentation"):
            raise ValueError(f"model.task: 'segmentation' goes with a dataset named {' or '.join(SEGMENTATION_DATASETS)}"
                             f", got task '{self.model.task}' on dataset '{self.dataset.name}'")
        if self.dataset.name == "seg_folder" and self.dataset.num_classes is None:
            raise ValueError("dataset.num_classes: required for a seg_folder dataset (the classes in its masks)")
        return self

    @model_validator(mode="after")
    def _known_model(self) -> "Study":
        from ablate.validate import model_name_problem

        problem = model_name_problem(self.model.name)
        if problem:
            raise ValueError(f"model.name: {problem}")
        return self


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` onto ``base`` into a new dict; dicts merge, everything else replaces.

    Unchanged subtrees are shared, not copied (validation never mutates them), so a file with many
    profiles costs the size of its overrides, not profiles x file size."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _describe(err: dict[str, Any], prefix: str) -> tuple[str, str]:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check spelling; unknown keys are errors)"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif "input" in err and err["type"] not in ("value_error",):
        msg = f"{msg} (got {_short_repr.repr(err['input'])})"
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


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: a 1 MiB file parses in ~0.1 s


def _where(node: yaml.Node) -> str:
    m = node.start_mark
    return f"line {m.line + 1}, column {m.column + 1}"


def _check_nodes(root: yaml.Node, path: Path) -> None:
    """Walk the composed YAML graph before constructing Python objects from it: plain tags only,
    bounded depth, strings and numbers, and a bounded node count where every use of an alias counts
    again (an alias bomb is small as a graph and huge once anything expands it)."""
    count = 0
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise StudyError(path, _where(node), f"at most {MAX_NODES} values in a study file, counting each use "
                             "of an alias (&anchor / *alias) again")
        if depth > MAX_DEPTH:
            raise StudyError(path, _where(node), f"nesting at most {MAX_DEPTH} levels deep")
        if node.tag not in _ALLOWED_TAGS:
            hint = "; quote dates and times" if node.tag.endswith(":timestamp") else ""
            raise StudyError(path, _where(node), f"plain YAML values (strings, numbers, booleans, null, lists, "
                             f"mappings), got the tag {_short_repr.repr(node.tag)}{hint}")
        if isinstance(node, yaml.ScalarNode):
            v = node.value
            if len(v) > MAX_STRING:
                raise StudyError(path, _where(node), f"strings of at most {MAX_STRING} characters, got {len(v)}")
            if node.tag.endswith((":int", ":float")) and len(v) > MAX_NUMBER_DIGITS:
                raise StudyError(path, _where(node), f"numbers of at most {MAX_NUMBER_DIGITS} characters")
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise StudyError(path, _where(node), "text without lone surrogates (\\ud800-\\udfff)") from None
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack.extend(((k, depth + 1), (v, depth + 1)))


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise StudyError(path, "<file>", f"a study file of at most {MAX_FILE_BYTES // 1024} KiB, got {size} bytes")
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise StudyError(path, "<file>", f"a readable study file ({e.strerror or e})") from None
    if len(data) > MAX_FILE_BYTES:
        raise StudyError(path, "<file>", f"a study file of at most {MAX_FILE_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StudyError(path, f"byte {e.start}", "UTF-8 text") from None


def parse_yaml(text: str, path: Path) -> Any:
    """The YAML document in ``text``, bounded (see ``_check_nodes``); every failure a StudyError."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, path)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
        problem = (str(getattr(e, "problem", None) or e).splitlines() or [""])[0][:150]
        raise StudyError(path, where, f"valid YAML ({problem})") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # a constructor on an odd value
        raise StudyError(path, "<file>", f"valid YAML values ({type(e).__name__}: {str(e)[:200]})") from None
    finally:
        loader.dispose()


def read_raw(path: str | Path) -> dict[str, Any]:
    """Read the YAML mapping of a study file, turning every failure into a StudyError."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(path, "<file>", "a readable study file (no such file)")
    raw = parse_yaml(_read_text(path), path)
    if not isinstance(raw, dict):
        raise StudyError(path, "<top level>", "a mapping with keys name, model, dataset, ...")
    if not all(isinstance(k, str) for k in raw):
        raise StudyError(path, "<top level>", "string keys")
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
    if len(profiles) > MAX_PROFILES:
        raise StudyError(path, "profiles", f"at most {MAX_PROFILES} profiles, got {len(profiles)}")
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
