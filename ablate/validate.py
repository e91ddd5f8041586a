"""Checks that need timm or torch, run by ``ablate plan`` (and so ``run``) before any compute.

``study.py`` checks the shape of a study file; this module checks that what it names exists and
fits: the metric is one the trainer reports, timm has the optimizer, scheduler, augmentation and
model (with its pretrained tag), the model accepts its kwargs and is of a size a machine can hold,
and every table format applies to the values it will format. Each failure is a ``StudyError``
naming the file and field, with "did you mean" where a close name exists.
"""

from __future__ import annotations

import contextlib
import difflib
import signal
import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterable

from ablate import metrics
from ablate.study import Study, StudyError
from ablate.text import format_problem

if TYPE_CHECKING:
    from ablate.model_costs import ModelCosts

MAX_PARAMS = 10**10  # 10 B parameters: far above the paper's largest model (RepLKNet-XL, 335 M)
MAX_KWARG = 10**6  # any number in model.kwargs: kernel sizes, depths, widths are far below
MAX_BUILD_S = 20.0
MAX_MODULES = 5_000  # modules or parameter tensors; RepLKNet-XL has 659 / 490, timm's nfnet_f7 ~1,600


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ''."""
    close = difflib.get_close_matches(str(name), list(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


# -- models ----------------------------------------------------------------------------------------
def model_name_problem(name: str) -> str | None:
    """Why timm's registry cannot build ``name`` (``arch`` or ``arch.pretrained_tag``), or None. A name
    that passed before with this code (``ablate.model_costs``) passes without importing timm."""
    from ablate.model_costs import shared

    known = shared()
    if known.passed("name", name):
        return None
    problem = _name_problem(name)
    if problem is None:
        known.put_passed("name", name)
    return problem


def _name_problem(name: str) -> str | None:
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    import ablate.models  # noqa: F401  (registers ablate's models)

    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        return (f"unknown model '{name}'{did_you_mean(arch, timm.list_models())}; `ablate models` lists the "
                "zoo, `ablate models --all PATTERN` timm's names")
    if tag:
        try:
            cfg = get_pretrained_cfg(name)
        except RuntimeError:
            cfg = None
        if cfg is None:
            tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
            return (f"model '{arch}' has no pretrained tag '{tag}'"
                    + (did_you_mean(tag, tags) or (f"; its tags: {', '.join(tags[:8])}" if tags else "; it has none")))
    return None


def _meta_failure_is_data_dependent(e: Exception) -> bool:
    """A constructor that needs real tensor values (``.item()``) cannot be built on the meta device;
    that is no fault of the kwargs, and counting falls back to the CPU for it."""
    return isinstance(e, NotImplementedError) or "meta" in str(e).lower()


@lru_cache(maxsize=256)
def _model_problem(name: str, kwargs_json: str, num_classes: int, in_chans: int) -> tuple[str, str] | None:
    import json

    import torch

    from ablate.flops import count_params
    from ablate.models import build_model
    from ablate.weights import WeightsError

    kwargs = json.loads(kwargs_json)
    for path, v in _numbers(kwargs, "model.kwargs"):
        if abs(v) > MAX_KWARG:  # a depth of 10^9 makes a constructor loop or allocate before any module exists
            return path, f"a number of at most {MAX_KWARG:.0e} in absolute value, got {v:.3g}"
    try:
        with torch.device("meta"), _bounded_build():  # shapes only: 10^12 parameters cost nothing here
            model = build_model({"name": name, "kwargs": kwargs}, num_classes, in_chans)
    except _TooBig as e:
        return "model.kwargs", str(e)
    except WeightsError as e:  # pretrained_cfg_overlay.file: missing, unreadable or another architecture's
        return "model.kwargs.pretrained_cfg_overlay.file", f"a checkpoint of this model ({_short(e)})"
    except Exception as e:  # noqa: BLE001 - constructors raise anything (TypeError, AssertionError, ...)
        if _meta_failure_is_data_dependent(e):
            if not kwargs:  # the registry's own defaults: counting builds it on the CPU
                return None
            return "model.kwargs", (f"a model that builds on the meta device, so its kwargs can be checked before "
                                    f"compute; {name} with these kwargs does not ({_short(e)})")
        return "model.kwargs", f"arguments {name} accepts ({type(e).__name__}: {_short(e)})"
    n = count_params(model)
    if n > MAX_PARAMS:
        return "model.kwargs", f"a model of at most {MAX_PARAMS:.0e} parameters; these give {n:.3g}"
    return None


def _numbers(node: Any, path: str) -> Iterable[tuple[str, float]]:
    if isinstance(node, bool):
        return
    if isinstance(node, (int, float)):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _numbers(v, f"{path}[{i}]")


class _TooBig(Exception):
    pass


@contextlib.contextmanager
def _bounded_build():
    """Stop a constructor as soon as it has made more than MAX_MODULES modules or parameter tensors
    or MAX_PARAMS parameters: ``depths: [1, 1, 1000000000, 1]`` fails in seconds instead of building
    a billion blocks (torch's global registration hooks, removed on exit)."""
    from torch.nn.modules import module as mod

    seen = {"modules": 0, "tensors": 0, "params": 0}

    def on_module(module: Any, name: str, sub: Any) -> None:
        seen["modules"] += 1
        if seen["modules"] > MAX_MODULES:
            raise _TooBig(f"a model of at most {MAX_MODULES} modules (the largest timm models have ~2,000)")

    def on_param(module: Any, name: str, param: Any) -> None:
        seen["tensors"] += 1
        seen["params"] += param.numel() if param is not None else 0
        if seen["tensors"] > MAX_MODULES:
            raise _TooBig(f"a model of at most {MAX_MODULES} parameter tensors")
        if seen["params"] > MAX_PARAMS:
            raise _TooBig(f"a model of at most {MAX_PARAMS:.0e} parameters")

    def on_alarm(signum: int, frame: Any) -> None:
        raise _TooBig(f"a model that builds in under {MAX_BUILD_S:g} s (on the meta device, shapes only)")

    handles = [mod.register_module_module_registration_hook(on_module),
               mod.register_module_parameter_registration_hook(on_param)]
    # a time bound too, for a constructor that loops without making modules (main thread only: signals)
    timed = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    if timed:
        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, MAX_BUILD_S)
    try:
        yield
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        for h in handles:
            h.remove()


def check_model(config: dict[str, Any], file: str, where: str = "") -> None:
    """The trial's model exists in timm's registry and accepts its kwargs (built on the meta device)."""
    import json

    from ablate.data_info import dataset_info

    model = config["model"]
    problem = model_name_problem(str(model["name"]))
    if problem:
        raise StudyError(file, f"{where}model.name", problem)
    kwargs = model.get("kwargs") or {}
    default = kwargs.get("num_classes", 1000)
    if not isinstance(default, int) or isinstance(default, bool) or not 1 <= default <= 10**6:
        raise StudyError(file, f"{where}model.kwargs.num_classes", f"an integer from 1 to 10^6, got {default!r:.60}")
    try:
        classes, chans = dataset_info(config["dataset"], default)
    except (OSError, ValueError) as e:
        raise StudyError(file, f"{where}dataset.root", f"a readable folder ({_short(e)})") from None
    found = _model_problem(model["name"], json.dumps(kwargs, sort_keys=True), classes, chans)
    if found:
        raise StudyError(file, where + found[0], found[1])


def measure_checked(measure: Any, config: dict[str, Any], file: str) -> tuple[int, int]:
    """``measure(config)`` (params, FLOPs), with a failure (a kernel larger than the input, say)
    reported against the model and dataset instead of as a traceback."""
    try:
        return measure(config)
    except Exception as e:  # noqa: BLE001
        raise StudyError(file, "model / dataset.image_size",
                         f"a model that runs on a {config['dataset'].get('image_size')}px image "
                         f"({type(e).__name__}: {_short(e)})") from None


def _short(e: BaseException, limit: int = 300) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= limit else s[:limit] + " …"


# -- recipe ----------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def optimizers() -> tuple[str, ...]:
    from timm.optim import list_optimizers

    return tuple(list_optimizers())


@lru_cache(maxsize=64)
def _sched_problem(sched: str) -> str | None:
    import warnings

    import torch
    from timm.scheduler import create_scheduler_v2

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            create_scheduler_v2(opt, sched=sched, num_epochs=10, updates_per_epoch=1)
    except Exception as e:  # noqa: BLE001
        return _short(e)
    return None


SCHEDULERS = ("cosine", "tanh", "step", "multistep", "plateau", "poly")  # for "did you mean" only


@lru_cache(maxsize=64)
def _augment_problem(aa: str) -> str | None:
    from timm.data import create_transform

    try:
        create_transform(32, is_training=True, auto_augment=aa)
    except Exception as e:  # noqa: BLE001 - timm asserts on an unknown policy or section
        return f"{type(e).__name__}: {_short(e)}" if str(e) else type(e).__name__
    return None


def check_recipe(recipe: dict[str, Any], file: str) -> None:
    opt = str(recipe["opt"])
    # timm accepts a 'lookahead_' prefix and is case-insensitive
    base = opt.lower().removeprefix("lookahead_")
    if base not in optimizers():
        raise StudyError(file, "recipe.opt", f"an optimizer timm has, got '{opt}'{did_you_mean(base, optimizers())}; "
                         "timm.optim.list_optimizers() lists them")
    sched = str(recipe["sched"])
    problem = _sched_problem(sched)
    if problem:
        raise StudyError(file, "recipe.sched", f"a scheduler timm's create_scheduler_v2 knows, got '{sched}' "
                         f"({problem}){did_you_mean(sched, SCHEDULERS)}")
    aa = recipe.get("auto_augment")
    if aa:
        problem = _augment_problem(str(aa))
        if problem:
            raise StudyError(file, "recipe.auto_augment", f"an augmentation string timm's create_transform parses "
                             f"(e.g. rand-m9-mstd0.5-inc1, augmix-m5, v0), got '{aa}' ({problem})")


# -- metrics ---------------------------------------------------------------------------------------
def check_metrics(study: Study, configs: list[dict[str, Any]], file: str) -> None:
    """``metric.name`` is reported by every trial, a table's ``metric:`` column by some trial."""
    cuda, ddp = study.resources.gpus > 0, study.resources.workers > 1
    every = [set(metrics.reported_by(c, cuda=cuda, ddp=ddp)) for c in configs]
    name = study.metric.name
    if not all(name in s for s in every):
        why = ""
        if name in metrics.ALL:
            why = (" only with recipe.ema_momentum set" if name.endswith("_ema") else
                   " only on a GPU (resources.gpus > 0)" if name in metrics.CUDA_ONLY else
                   " only with resources.workers > 1" if name in metrics.DDP_ONLY else "")
            raise StudyError(file, "metric.name", f"a metric every trial reports; the trainer reports '{name}'{why}")
        raise StudyError(file, "metric.name", f"a metric the trainer reports, got '{name}'"
                         f"{did_you_mean(name, metrics.ALL)}; it reports {', '.join(sorted(set().union(*every)))}")
    from ablate.analyses import declared_metrics

    any_trial = set().union(*every) | declared_metrics(study)  # analyses store metrics too (erf_r20 ...)
    for i, col in enumerate((study.table.columns or []) if study.table else []):
        if col.source.startswith("metric:"):
            m = col.source.split(":", 1)[1]
            if m not in any_trial:
                raise StudyError(file, f"table.columns[{i}].source", f"a metric the trainer reports for these trials, "
                                 f"got '{m}'{did_you_mean(m, any_trial)}")


# -- table formats ---------------------------------------------------------------------------------
def _has_path(config: dict[str, Any], path: str) -> bool:
    from ablate.expand import get_path

    try:
        get_path(config, path)
    except KeyError:
        return False
    return True


def check_table(study: Study, configs: list[dict[str, Any]], file: str) -> None:
    """Every column's source exists (a config path of some trial, a known derived value, params,
    flops, trial; metrics in ``check_metrics``), the baseline matches a trial, and every format is
    safe and applies to the values it will format (a config value of each trial, a float for
    metrics, an int for params / FLOPs)."""
    from ablate.expand import get_path
    from ablate.tables import DERIVED

    if study.table and study.table.baseline:
        base = study.table.baseline
        if not any(all(_has_path(c, k) and get_path(c, k) == v for k, v in base.items()) for c in configs):
            raise StudyError(file, "table.baseline", f"config values of one of the study's trials, got {base!r:.200}")
    for i, col in enumerate((study.table.columns or []) if study.table else []):
        src = col.source
        if src.startswith("derived:") and src.split(":", 1)[1] not in DERIVED:
            raise StudyError(file, f"table.columns[{i}].source", f"one of {', '.join('derived:' + d for d in DERIVED)}"
                             f", got '{src}'")
        # model.kwargs.<x> may be left at the model's default (the column shows '–'): not checked
        if not (src in ("params", "flops", "trial") or src.startswith(("derived:", "metric:", "model.kwargs."))
                or any(_has_path(c, src) for c in configs)):
            raise StudyError(file, f"table.columns[{i}].source", "params, flops, trial, metric:<name>, derived:<name> "
                             f"or a config path of the trials (e.g. model.kwargs.kernel_size), got {src!r:.100}")
        if col.format is None:
            continue
        problem = format_problem(col.format)
        if problem:
            raise StudyError(file, f"table.columns[{i}].format", problem)
        if col.format == "human":
            continue
        samples: list[Any]
        if src.startswith("metric:"):
            samples = [76.54321]
        elif src in ("params", "flops"):
            samples = [4_000_000]
        elif src.startswith("derived:") or src == "trial":
            samples = [3]
        else:
            samples = []
            for c in configs:
                try:
                    v = get_path(c, src)
                except KeyError:
                    continue
                samples += v if isinstance(v, list) else [v]
        for v in samples:
            try:
                col.format.format(v=v)
            except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
                raise StudyError(file, f"table.columns[{i}].format", f"a format that applies to {v!r} "
                                 f"(from {src}), got '{col.format}' ({_short(e)})") from None


# -- all -------------------------------------------------------------------------------------------
def check_plan(study: Study, configs: list[dict[str, Any]], file: str, known: ModelCosts | None = None) -> None:
    """Everything above, over the trials' resolved configs (axes may vary any of these). ``known``:
    recipes and models that passed these checks before with this code (``ablate.model_costs``) are
    not checked again, so a plan of them needs neither torch nor timm; those that pass are added."""
    from ablate.model_costs import recipe_value

    seen: set[str] = set()
    for c in configs:
        key = repr((c["model"], c["dataset"], c["recipe"].get("opt"), c["recipe"].get("sched"),
                    c["recipe"].get("auto_augment")))
        if key in seen:
            continue
        seen.add(key)
        if known is None or not known.passed("recipe", recipe_value(c["recipe"])):
            check_recipe(c["recipe"], file)
            if known is not None:
                known.put_passed("recipe", recipe_value(c["recipe"]))
        if known is None or known.model(c) is None:
            check_model(c, file)
    check_metrics(study, configs, file)
    check_table(study, configs, file)
