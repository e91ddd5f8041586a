"""ablate's model zoo, registered in timm's registry on import (``timm.create_model`` builds them).

Registered here: ``mobilenetv2_lk`` (Sec. 3, Appendix E), ``replknet_31b`` / ``_31l`` / ``_xl``
(Sec. 4, Appendix A), ``convnext_lk_tiny`` / ``_small`` / ``_base`` (Appendix D). ResNets are timm's
own (``resnet101``, ``resnet152``). ``ablate.zoo`` lists them with their params and FLOPs.
"""

from ablate.models import convnext_lk, mobilenetv2_lk, replknet  # noqa: F401  (registers)
from ablate.models._registry import model_exists

__all__ = ["model_exists", "build_model"]


def build_model(model: dict, num_classes: int, in_chans: int, drop_path_rate: float = 0.0):
    """A study's model from its resolved ``model`` section; the dataset decides classes and channels."""
    import timm

    kwargs = dict(model.get("kwargs") or {})
    overlay = kwargs.get("pretrained_cfg_overlay")
    if isinstance(overlay, dict) and isinstance(overlay.get("file"), str):  # a local checkpoint: $VARS and ~ expand
        import os

        kwargs["pretrained_cfg_overlay"] = {**overlay, "file": os.path.expandvars(os.path.expanduser(overlay["file"]))}
    kwargs["num_classes"], kwargs["in_chans"] = num_classes, in_chans
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    return timm.create_model(model["name"], **kwargs)
