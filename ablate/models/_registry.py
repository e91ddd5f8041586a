"""Registration in timm's one registry, so ``timm.create_model`` builds ablate's models."""

from __future__ import annotations

from typing import Any, Callable

import timm
from timm.models import build_model_with_cfg, register_model
from torch import nn

# timm passes these to every entrypoint; ablate's models have no released weights in timm, but
# ``pretrained=True`` with ``pretrained_cfg_overlay=dict(file=PATH)`` loads a local checkpoint (ablate.weights).
_TIMM_ONLY = ("pretrained_cfg", "cache_dir")


def ablate_model(cls: Callable[..., nn.Module], name: str, feature_cfg: dict[str, Any] | None = None,
                 **defaults: Any) -> None:
    """Register ``name`` as an entrypoint that builds ``cls(**defaults, **kwargs)``.

    ``feature_cfg`` (as timm's own entrypoints pass it to ``build_model_with_cfg``) makes
    ``features_only=True`` / ``out_indices`` give the model's stage outputs, e.g. for UperNet; a model
    registered without one has no feature pyramid. A classifier is built by ``cls`` directly, as before."""

    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
        for k in _TIMM_ONLY:
            kwargs.pop(k, None)
        if pretrained and not overlay.get("file"):
            raise ValueError(f"{name} has no released weights in timm; train it with a study, or give a local "
                             f"checkpoint: pretrained: true, pretrained_cfg_overlay: {{file: PATH}}")
        if not kwargs.get("features_only"):
            kwargs.pop("features_only", None)
            model = cls(**{**defaults, **kwargs})
        elif feature_cfg is None:
            raise ValueError(f"{name} has no feature pyramid (features_only=True)")
        else:
            model = build_model_with_cfg(cls, name, False, pretrained_cfg={"architecture": name},
                                         feature_cfg=dict(feature_cfg), **{**defaults, **kwargs})
        if pretrained:
            from ablate.weights import load_weights

            load_weights(model, overlay["file"])
        return model

    entry.__name__ = name
    entry.__qualname__ = name
    entry.__module__ = cls.__module__
    entry.__doc__ = cls.__doc__
    register_model(entry)


def model_exists(name: str) -> bool:
    return timm.is_model(name)
