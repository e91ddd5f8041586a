"""Kernel-weight maps (RepLKNet Appendix F, Figure 6).

The paper takes MobileNetV2 with 13x13 depthwise kernels, with and without a parallel 3x3 re-param
branch, picks "the first stride-1 13x13 conv in the last stage (i.e., the stage with input
resolution of 7x7)", fuses its BN, takes |w| summed over channels into a 13x13 matrix and rescales it
to [0, 1]. For the re-param model it shows the large kernel alone (after BN fusion) and the merged
kernel (the 3x3 added onto the centre).

Which conv (options ``stage``, ``index``): the model's re-param depthwise convs (``LargeKernelDW``,
``ParallelSmallKernel``; a model without any: its depthwise ``nn.Conv2d`` of the largest kernel) are
found by a forward pass at 224x224 with hooks and grouped into stages by the resolution of their
input, in call order; ``stage`` picks one such resolution (-1: the smallest, 7x7 -- the paper's
"last stage") and ``index`` the stride-1 conv among that stage's (0: the first). For MobileNetV2 the
7x7 stage is blocks 13-16 (blocks 13's conv has stride 2 and 14x14 input), so the default is
``blocks.14.dw``.

Rescaling: each map is divided by its maximum (as the paper does for the ERF), so the summary shares
below do not depend on it. The paper's two observations become numbers a table holds:

* ``kernel_center3_share``: the share of the total magnitude in the central 3x3 (uniform: 9/169 = 5.3%
  for 13x13) -- "the central 3x3 part of the resultant kernel is further enhanced" by re-param;
* ``kernel_skeleton_share``: the share on the centre row and centre column (uniform: 25/169 = 14.8%) --
  "the skeleton parameters are relatively larger" (ACNet);
* ``kernel_center_value``: the rescaled centre (1.0: "the central point has the largest magnitude");
* ``kernel_distance_corr``: Spearman correlation of magnitude with distance from the centre (negative:
  "points closer to the center have larger values").

Each for the large kernel alone (variant ``large``) and, with the suffix ``_merged``, for the deployed
(merged) kernel (variant ``merged``); without a small branch the two are the same kernel.
``kernel_has_small`` says which case it is. Arrays: ``kernel_large.npy``, ``kernel_merged.npy``.
A constant map has no trend: its ``kernel_distance_corr`` is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ablate.analyses import AnalysisResult, TrialContext, register

if TYPE_CHECKING:
    from torch import nn

SCALAR_NAMES = ("kernel_center3_share", "kernel_skeleton_share", "kernel_center_value", "kernel_distance_corr")
HAS_SMALL = "kernel_has_small"
PROBE_SIZE = 224  # the forward pass that finds the stages: the paper's input, where the last stage is 7x7


class KernelAnalysisError(ValueError):
    """The model has no depthwise conv the kernels analysis can read."""


@dataclass
class KernelPick:
    name: str
    module: Any
    input_size: tuple[int, int]


def _kernel_size(m: Any) -> int | None:
    from torch import nn

    from ablate.layers import LargeKernelDW, ParallelSmallKernel

    if isinstance(m, LargeKernelDW):
        if m.merged is not None:
            return m.merged.kernel_size[0]
        return m.dilation * (m.kernel_size - 1) + 1
    if isinstance(m, ParallelSmallKernel):
        conv = m.merged if m.merged is not None else m.lk
        return conv.dilation[0] * (conv.kernel_size[0] - 1) + 1
    if isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels and m.groups > 1:
        return m.dilation[0] * (m.kernel_size[0] - 1) + 1
    return None


def _stride(m: Any) -> int:
    from ablate.layers import LargeKernelDW, ParallelSmallKernel

    if isinstance(m, LargeKernelDW):
        return int(m.stride if isinstance(m.stride, int) else m.stride[0])
    if isinstance(m, ParallelSmallKernel):
        conv = m.merged if m.merged is not None else m.lk
        return int(conv.stride[0])
    return int(m.stride[0])


def candidates(model: nn.Module) -> list[tuple[str, Any]]:
    """The large depthwise convs: the re-param modules (a module hides the convs inside it) or, in a
    model without any, the depthwise convs of the largest kernel."""
    from ablate.layers import LargeKernelDW, ParallelSmallKernel

    out: list[tuple[str, Any]] = []
    inside: list[str] = []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if _kernel_size(m) is not None:
            out.append((name, m))
            inside.append(name)
    reparam = [(n, m) for n, m in out if isinstance(m, (LargeKernelDW, ParallelSmallKernel))]
    if reparam:
        return reparam
    largest = max((_kernel_size(m) or 0 for _, m in out), default=0)
    return [(n, m) for n, m in out if _kernel_size(m) == largest]


def _in_chans(model: nn.Module) -> int:
    from torch import nn

    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else 3


def _input_sizes(model: nn.Module, names: list[str], image_size: int) -> list[tuple[str, tuple[int, int]]]:
    """(name, input H x W) of the named modules, in call order, from one forward pass of a zero image."""
    import torch

    seen: list[tuple[str, tuple[int, int]]] = []
    hooks = [model.get_submodule(n).register_forward_pre_hook(
        lambda _m, args, n=n: seen.append((n, tuple(args[0].shape[-2:])))) for n in names]
    was_training = model.training
    p = next(model.parameters())
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, _in_chans(model), image_size, image_size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return seen


def stages(model: nn.Module, image_size: int = PROBE_SIZE) -> list[tuple[tuple[int, int], list[tuple[str, Any, int]]]]:
    """The candidate convs grouped by input resolution, in call order: [(input size, [(name, module,
    stride), ...]), ...]."""
    found = candidates(model)
    if not found:
        raise KernelAnalysisError("analyses.kernels: the model has no depthwise conv to visualise")
    seen = _input_sizes(model, [n for n, _ in found], image_size)
    modules = dict(found)
    groups: dict[tuple[int, int], list[tuple[str, Any, int]]] = {}
    for name, size in seen:
        if all(name != n for n, _, _ in groups.get(size, [])):
            groups.setdefault(size, []).append((name, modules[name], _stride(modules[name])))
    return list(groups.items())


def find_kernel(model: nn.Module, stage: int = -1, index: int = 0, image_size: int = PROBE_SIZE) -> KernelPick:
    """The ``index``-th stride-1 large depthwise conv of ``stage`` (stages by input resolution, in call
    order; -1: the last, the smallest map) -- by default the paper's "first stride-1 13x13 conv in the last stage (input 7x7)"."""
    groups = stages(model, image_size)
    if not -len(groups) <= stage < len(groups):
        raise KernelAnalysisError(f"analyses.kernels.stage: {stage} is out of range; the model's large depthwise "
                                  f"convs run at {len(groups)} resolutions (stages 0..{len(groups) - 1}, or -1)")
    size, members = groups[stage]
    group = [(n, m) for n, m, s in members if s == 1]
    if not 0 <= index < len(group):
        raise KernelAnalysisError(f"analyses.kernels.index: {index} is out of range; stage {stage} has {len(group)} "
                                  f"stride-1 large depthwise conv(s)")
    name, module = group[index]
    return KernelPick(name, module, size)


def kernel_weights(m: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """(large kernel alone after BN fusion, merged kernel, has a small branch), each (C, 1, k, k) as
    float64 numpy. A dilated kernel is given in its dense (sparse) form, so the map shows the gaps."""
    import torch

    from ablate.layers import LargeKernelDW, ParallelSmallKernel
    from ablate.layers.conv_bn import fuse_conv_bn
    from ablate.layers.large_kernel import dilate_kernel

    def np64(t: torch.Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float64).numpy()

    with torch.no_grad():
        if isinstance(m, LargeKernelDW):
            if m.merged is not None:
                w = dilate_kernel(m.merged.weight, m.merged.dilation)
                return np64(w), np64(w), False
            large = dilate_kernel(fuse_conv_bn(m.lk.conv, m.lk.bn)[0], m.dilation)
            if m.small is None:
                return np64(large), np64(large), False
            return np64(large), np64(m.merged_kernel()[0]), True
        if isinstance(m, ParallelSmallKernel):
            if m.merged is not None:
                w = dilate_kernel(m.merged.weight, m.merged.dilation)
                return np64(w), np64(w), False
            large = dilate_kernel(m.lk.weight, m.lk.dilation)
            return np64(large), np64(m.merged_kernel()[0]), True
        w = dilate_kernel(m.weight, m.dilation)
        return np64(w), np64(w), False


def aggregate(weight: np.ndarray) -> np.ndarray:
    """|w| summed over channels into a k x k matrix, divided by its maximum (so in [0, 1])."""
    agg = np.abs(weight).reshape(-1, *weight.shape[-2:]).sum(axis=0)
    peak = agg.max()
    return agg / peak if peak > 0 else agg


def summarise(agg: np.ndarray) -> dict[str, float]:
    """The shares and trends of one aggregated (square, odd) kernel map; see the module docstring."""
    from scipy.stats import spearmanr

    k = agg.shape[-1]
    c = k // 2
    total = float(agg.sum())
    yy, xx = np.mgrid[:k, :k]
    skeleton = (yy == c) | (xx == c)
    centre3 = (abs(yy - c) <= 1) & (abs(xx - c) <= 1)
    dist = np.hypot(yy - c, xx - c)
    corr = float(spearmanr(dist.ravel(), agg.ravel()).statistic) if k > 1 and np.ptp(agg) > 0 else 0.0
    share = (lambda mask: float(agg[mask].sum()) / total) if total > 0 else (lambda mask: 0.0)
    return {"kernel_center3_share": share(centre3), "kernel_skeleton_share": share(skeleton),
            "kernel_center_value": float(agg[c, c]), "kernel_distance_corr": float(corr)}


def kernel_maps(model: nn.Module, stage: int = -1, index: int = 0,
                image_size: int = PROBE_SIZE) -> tuple[KernelPick, np.ndarray, np.ndarray, bool]:
    """(the conv picked, large map, merged map, has small branch): Figure 6's matrices for one model."""
    pick = find_kernel(model, stage, index, image_size)
    large, merged, has_small = kernel_weights(pick.module)
    return pick, aggregate(large), aggregate(merged), has_small


def _variants(options: Any) -> list[str]:
    return list(getattr(options, "variants", None) or ["large", "merged"])


def _scalar_names(options: Any) -> list[str]:
    return [n + ("" if v == "large" else f"_{v}") for v in _variants(options) for n in SCALAR_NAMES] + [HAS_SMALL]


def _array_names(options: Any) -> list[str]:
    return [f"kernel_{v}.npy" for v in _variants(options)]


@register("kernels", scalars=_scalar_names, arrays=_array_names)
def analyze(model: nn.Module, ctx: TrialContext | None, options: Any) -> AnalysisResult:
    """The ``kernels`` analysis (``KernelsOptions``: ``stage``, ``index``, ``variants``)."""
    pick, large, merged, has_small = kernel_maps(model, int(getattr(options, "stage", -1)),
                                                 int(getattr(options, "index", 0)))
    maps = {"large": large, "merged": merged}
    scalars: dict[str, float] = {HAS_SMALL: float(has_small), "kernel_input_size": float(pick.input_size[0])}
    arrays: dict[str, np.ndarray] = {}
    for v in _variants(options):
        scalars.update({n + ("" if v == "large" else f"_{v}"): x for n, x in summarise(maps[v]).items()})
        arrays[f"kernel_{v}.npy"] = maps[v].astype(np.float32)
    return AnalysisResult(scalars=scalars, arrays=arrays)


def figure6(plain: np.ndarray, large: np.ndarray, merged: np.ndarray,
            titles: tuple[str, str, str] = ("without re-param (BN fused)", "with 3x3 re-param: 13x13 alone",
                                            "with 3x3 re-param: merged")) -> dict[str, Any]:
    """Figure 6 as a plotly figure dict: three heatmaps side by side on one [0, 1] colour scale.
    ``plain``: the model without re-param's map; ``large``/``merged``: the re-param model's."""
    return kernel_maps_figure(list(zip(titles, (plain, large, merged))))


def kernel_maps_figure(panels: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """Any number of (title, map) heatmaps side by side, rows top-down as in the paper, shared colour scale."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for t, _ in panels], horizontal_spacing=0.04)
    for i, (title, agg) in enumerate(panels, start=1):
        fig.add_trace(go.Heatmap(z=np.asarray(agg).tolist(), zmin=0.0, zmax=1.0, colorscale="Viridis", name=title,
                                 showscale=i == len(panels)), row=1, col=i)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{i if i > 1 else ''}", showticklabels=False,
                         row=1, col=i)
        fig.update_xaxes(showticklabels=False, row=1, col=i)
    fig.update_layout(title="Kernel magnitudes aggregated over channels (RepLKNet Fig. 6)")
    return fig.to_dict()
