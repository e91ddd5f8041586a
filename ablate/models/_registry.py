"""Registration in timm's one registry, so ``timm.create_model`` builds ablate's models."""

from __future__ import annotations

from typing import Any, Callable

import timm
from timm.models import register_model
from torch import nn

# timm passes these to every entrypoint; ablate's models have no pretrained weights to load.
_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def ablate_model(cls: Callable[..., nn.Module], name: str, **defaults: Any) -> None:
    """Register ``name`` as an entrypoint that builds ``cls(**defaults, **kwargs)``."""

    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights; train it with a study")
        for k in _TIMM_ONLY:
            kwargs.pop(k, None)
        return cls(**{**defaults, **kwargs})

    entry.__name__ = name
    entry.__qualname__ = name
    entry.__module__ = cls.__module__
    entry.__doc__ = cls.__doc__
    register_model(entry)


def model_exists(name: str) -> bool:
    return timm.is_model(name)
