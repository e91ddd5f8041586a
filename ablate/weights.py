"""Weights from outside: a local checkpoint file into one of ablate's models (or timm's).

The paper's ERF and shape-bias figures use released checkpoints (RepLKNet-13/-31B, ResNet-101/152).
``load_weights(model, path)`` reads a checkpoint (a bare state dict, or one under ``model`` /
``state_dict`` / ``model_ema``; a DDP ``module.`` prefix is dropped), passes it through the model's
``checkpoint_filter_fn`` when its module defines one (timm's convention: RepLKNet's maps the official
repository's names to ablate's), then checks it against the model by name *and* shape before loading:
a missing or unexpected key, or a shape that differs, is an error naming it -- never a silent partial
load. Only the classifier may differ (another number of classes): it keeps its fresh init and is
reported. torchvision / timm ResNet state dicts load into timm's ``resnet101`` / ``resnet152`` as they are.

In a study: ``model: {name: replknet_31b, kwargs: {pretrained: true, pretrained_cfg_overlay: {file: PATH}}}``
(timm's own way to point a model at a local file; for timm's models timm loads it, for ablate's the
registry calls ``load_weights``). ``ablate import-weights`` converts a file once and checks it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    import torch
    from torch import nn

CHECKPOINT_KEYS = ("model", "state_dict", "model_ema", "state_dict_ema")
"""Where a training script's checkpoint keeps the weights, in the order looked for."""


class WeightsError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model (a user error: exit 2)."""


@dataclass
class LoadReport:
    loaded: int
    fresh: list[str] = field(default_factory=list)   # the classifier's tensors kept at their init
    mapped: bool = False                              # a checkpoint_filter_fn renamed keys


def read_checkpoint(path: str | Path, ema: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file as a flat state dict (``ema``: prefer the EMA weights)."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise WeightsError(f"{path}: not a PyTorch checkpoint torch.load can read safely "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return unwrap(obj, str(path), ema)


def unwrap(obj: Any, where: str = "checkpoint", ema: bool = False) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(obj, Mapping):
        order = (("model_ema", "state_dict_ema") if ema else ()) + CHECKPOINT_KEYS
        for key in order:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{where}: holds no state dict (a mapping of names to tensors, at the top or under "
                           f"one of {', '.join(CHECKPOINT_KEYS)})")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def filter_fn_for(model: nn.Module) -> Callable[[dict, nn.Module], dict] | None:
    """The ``checkpoint_filter_fn`` of the module that defines the model's class (timm's convention)."""
    module = inspect.getmodule(type(model))
    fn = getattr(module, "checkpoint_filter_fn", None)
    return fn if callable(fn) else None


def _classifier_names(model: nn.Module) -> set[str]:
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else getattr(model, "classifier", None)
    if head is None:
        return set()
    for prefix, m in model.named_modules():
        if m is head:
            return {f"{prefix}.{k}" for k in m.state_dict()}
    return set()


def _listed(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], where: str = "checkpoint") -> list[str]:
    """Raise ``WeightsError`` unless ``state`` has exactly the model's tensors with the model's shapes;
    only the classifier may be missing or differ in shape. Returns the classifier keys left fresh."""
    own = model.state_dict()
    head = _classifier_names(model)
    mismatched = [f"{k} {tuple(state[k].shape)} vs the model's {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape and k not in head]
    missing = [k for k in own if k not in state and k not in head]
    unexpected = [k for k in state if k not in own]
    if mismatched:
        raise WeightsError(f"{where}: shapes differ from the model's: {_listed(mismatched, 3)}; is it the same "
                           f"architecture and kwargs (channels, kernel sizes, small kernel)?")
    if missing or unexpected:
        parts = ([f"missing {_listed(missing)}"] if missing else []) + \
                ([f"unexpected {_listed(unexpected)}"] if unexpected else [])
        raise WeightsError(f"{where}: keys do not match the model: {'; '.join(parts)}")
    return sorted(k for k in head if k not in state or state[k].shape != own[k].shape)


def load_weights(model: nn.Module, source: str | Path | Mapping[str, Any], ema: bool = False,
                 filter_fn: Callable[[dict, nn.Module], dict] | None = None) -> LoadReport:
    """Load a checkpoint file (or a state dict) into ``model`` in place, checked; see the module docstring."""
    where = str(source) if isinstance(source, (str, Path)) else "checkpoint"
    state = read_checkpoint(source, ema) if isinstance(source, (str, Path)) else unwrap(source, where, ema)
    fn = filter_fn or filter_fn_for(model)
    mapped = False
    if fn is not None:
        before = set(state)
        try:
            state = fn(state, model)
        except ValueError as e:
            raise WeightsError(f"{where}: {e}") from None
        mapped = set(state) != before
    fresh = check_fits(model, state, where)
    if any(p.is_meta for p in model.parameters()):  # built on the meta device (plan's checks): shapes are all
        return LoadReport(loaded=0, fresh=fresh, mapped=mapped)
    model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    return LoadReport(loaded=len(state) - len([k for k in fresh if k in state]), fresh=fresh, mapped=mapped)


def import_weights(model_name: str, checkpoint: str | Path, out: str | Path, kwargs: Mapping[str, Any] | None = None,
                   ema: bool = False) -> LoadReport:
    """``ablate import-weights``: build ``model_name`` (timm's registry, ablate's models included) with
    ``kwargs``, load ``checkpoint`` checked, and save the model's state dict to ``out`` -- a file the
    model loads as it is (``pretrained_cfg_overlay: {file: out}``)."""
    import timm
    import torch

    import ablate.models  # noqa: F401 - registers ablate's models

    if not timm.is_model(model_name):
        raise WeightsError(f"model '{model_name}': not in timm's registry (ablate's models included)")
    try:
        model = timm.create_model(model_name, **dict(kwargs or {}))
    except (TypeError, ValueError) as e:
        raise WeightsError(f"model '{model_name}' with kwargs {dict(kwargs or {})}: {e}") from None
    out = Path(out).expanduser()
    if not out.parent.is_dir():
        raise WeightsError(f"--out {out}: folder {out.parent} does not exist")
    report = load_weights(model, checkpoint, ema)
    torch.save(model.state_dict(), out)
    return report
