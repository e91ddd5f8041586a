"""The paper's model zoo with params and FLOPs of the deployed (re-parameterized) form.

Counting builds each model on the meta device (shapes, no memory, no arithmetic), merges it with
``ablate.reparam.merge`` and counts parameters and multiply-adds (``ablate.flops``), so even
RepLKNet-XL is listed in about a second. ``ablate models`` prints this table (counts made before by the
same code come from ``ablate.model_costs``: no torch imported).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ablate.model_costs import ModelCosts, shared

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ZooEntry:
    """One configuration of a registered model, with the paper's figures where it prints them."""

    label: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # where the paper's figures are printed
    paper_params: str | None = None  # as printed, e.g. "79M"
    paper_flops: str | None = None  # at 224x224, as printed, e.g. "15.3G"

    @property
    def section(self) -> dict[str, Any]:
        """The study file's ``model`` section that builds it."""
        return {"name": self.model, "kwargs": self.kwargs}


K31, K7 = [31, 29, 27, 13], [7, 7, 7, 7]  # written out, as the study files write them
ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("MobileNetV2", "mobilenetv2_lk", {"kernel_size": 3}),
    ZooEntry("MobileNetV2 9x9", "mobilenetv2_lk", {"kernel_size": 9}, "Table 12", "4.0M", "319M"),
    ZooEntry("MobileNetV2 3x3 d4", "mobilenetv2_lk", {"kernel_size": 3, "dilation": 4}, "Table 12", "3.5M", "300M"),
    ZooEntry("MobileNetV2 13x13", "mobilenetv2_lk", {"kernel_size": 13}, "Table 12", "4.6M", "361M"),
    ZooEntry("MobileNetV2 3x3 d6", "mobilenetv2_lk", {"kernel_size": 3, "dilation": 6}, "Table 12", "3.5M", "300M"),
    ZooEntry("MobileNetV2 13x13 + 3x3 re-param", "mobilenetv2_lk", {"kernel_size": 13, "small_kernel": 3}),
    ZooEntry("RepLKNet-31B", "replknet_31b", {"kernel_sizes": K31}, "paper / official README", "79M", "15.3G"),
    ZooEntry("RepLKNet-31L", "replknet_31l", {}, "official README; 96.0G at 384", "172M"),
    ZooEntry("RepLKNet-XL", "replknet_xl", {}, "official README; 128.7G at 320", "335M"),
    ZooEntry("RepLKNet-3", "replknet_31b", {"kernel_sizes": [3, 3, 3, 3]}),
    ZooEntry("RepLKNet-13", "replknet_31b", {"kernel_sizes": [13, 13, 13, 13]}),
    ZooEntry("ConvNeXt-T 7-7-7-7", "convnext_lk_tiny", {"kernel_sizes": K7}, "Table 11", "29M", "4.5G"),
    ZooEntry("ConvNeXt-T 31-29-27-13", "convnext_lk_tiny", {"kernel_sizes": K31}, "Table 11", "32M", "6.1G"),
    ZooEntry("ConvNeXt-S 7-7-7-7", "convnext_lk_small", {"kernel_sizes": K7}, "Table 11", "50M", "8.7G"),
    ZooEntry("ConvNeXt-S 31-29-27-13", "convnext_lk_small", {"kernel_sizes": K31}, "Table 11", "58M", "11.3G"),
    ZooEntry("ConvNeXt-B 7-7-7-7", "convnext_lk_base", {"kernel_sizes": K7}, "Table 11", "89M", "15.4G"),
    ZooEntry("ResNet-101", "resnet101", {}),
    ZooEntry("ResNet-152", "resnet152", {}),
)


_UNITS = {"K": 10**3, "M": 10**6, "G": 10**9}


def as_printed(value: int, printed: str) -> bool:
    """Whether ``value`` is what the paper prints as ``printed`` ("79M", "15.3G"): rounded half-up
    *or* truncated to the printed digits. The paper does both: ConvNeXt-B's 15.355G is printed
    15.4G (Table 11), RepLKNet-31B's 15.354G is printed 15.3G."""
    number = Decimal(printed[:-1])
    step = Decimal(1).scaleb(number.as_tuple().exponent)
    v = Decimal(value) / _UNITS[printed[-1]]
    return number in (v.quantize(step, ROUND_HALF_UP), v.quantize(step, ROUND_DOWN))


def build_for_counting(model: dict[str, Any], num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    """The model a study's ``model`` section builds, on the meta device when it can be (no memory,
    no init cost), else on the CPU."""
    import torch

    from ablate.models import build_model

    try:
        with torch.device("meta"):
            return build_model(model, num_classes, in_chans)
    except (RuntimeError, NotImplementedError):  # a constructor that needs real values (e.g. .item())
        return build_model(model, num_classes, in_chans)


def measure_deployed(model: dict[str, Any], num_classes: int, in_chans: int, image_size: int) -> tuple[int, int]:
    """(params, multiply-adds of one image) of the deploy form (``reparam.merge``) of a model.

    A pure function of its arguments, memoized: a model section is measured once per process."""
    return _measure(json.dumps(model, sort_keys=True, default=str), num_classes, in_chans, image_size)


@lru_cache(maxsize=512)
def _measure(model_json: str, num_classes: int, in_chans: int, image_size: int) -> tuple[int, int]:
    from ablate.flops import count_macs, count_params
    from ablate.reparam import merge

    deployed = merge(build_for_counting(json.loads(model_json), num_classes, in_chans), inplace=True)
    return count_params(deployed), count_macs(deployed, image_size, in_chans)


def uncounted(input_size: int = 224, num_classes: int = 1000, known: ModelCosts | None = None) -> int:
    """How many zoo entries ``zoo_rows`` would build and count (none in ``known``'s cache yet)."""
    known = known if known is not None else shared()
    return sum(known.deployed(e.section, num_classes, 3, input_size) is None for e in ZOO)


def zoo_rows(input_size: int = 224, num_classes: int = 1000, known: ModelCosts | None = None) -> list[dict[str, Any]]:
    """One row per zoo entry: name, kwargs, deploy-form params and FLOPs, and the paper's figures.

    Counts made before by this code come from ``known`` (default: the cache file of
    ``ablate.model_costs``), so a second ``ablate models`` imports neither torch nor timm (~8 s)."""
    known = known if known is not None else shared()
    rows = []
    for e in ZOO:
        model = e.section
        counts = known.deployed(model, num_classes, 3, input_size)
        if counts is None:
            counts = measure_deployed(model, num_classes, 3, input_size)
            known.put_deployed(model, num_classes, 3, input_size, counts)
        params, flops = counts
        paper_flops = e.paper_flops if input_size == 224 and num_classes == 1000 else None
        paper_params = e.paper_params if num_classes == 1000 else None
        rows.append({"label": e.label, "model": e.model, "kwargs": e.kwargs, "params": params, "flops": flops,
                     "input_size": input_size, "paper_params": paper_params, "paper_flops": paper_flops,
                     "params_as_printed": as_printed(params, paper_params) if paper_params else None,
                     "flops_as_printed": as_printed(flops, paper_flops) if paper_flops else None,
                     "source": e.source})
    known.save()
    return rows
