"""Kernel-weight maps (RepLKNet Appendix F, Figure 6).

The paper takes MobileNetV2 with 13x13 depthwise kernels, with and without a parallel 3x3 re-param
branch, picks "the first stride-1 13x13 conv in the last stage (i.e., the stage with input
resolution of 7x7)", fuses its BN, takes |w| summed over channels into a 13x13 matrix and rescales it
to [0, 1]. For the re-param model it shows the large kernel alone (after BN fusion) and the merged
kernel (the 3x3 added onto the centre).

Which conv: the depthwise re-param convs (``LargeKernelDW``, ``ParallelSmallKernel``, or a plain
depthwise ``nn.Conv2d``) are found by a forward pass at ``image_size`` (default 224) with hooks; of
those with stride 1 and the wanted kernel size, the first one called on the smallest feature map
(7x7 at 224) is the one. ``module: NAME`` picks one by name instead.

Rescaling: each map is divided by its maximum (as the paper does for the ERF), so the summary shares
below do not depend on it. The paper's two observations become numbers a table holds:

* ``kernel_center3_share``: the share of the total magnitude in the central 3x3 (uniform: 9/169 = 5.3%
  for 13x13) -- "the central 3x3 part of the resultant kernel is further enhanced" by re-param;
* ``kernel_skeleton_share``: the share on the centre row and centre column (uniform: 25/169 = 14.8%) --
  "the skeleton parameters are relatively larger" (ACNet);
* ``kernel_center_value``: the rescaled centre (1.0: "the central point has the largest magnitude");
* ``kernel_distance_corr``: Spearman correlation of magnitude with distance from the centre (negative:
  "points closer to the center have larger values").

Each for the large kernel alone and, with the suffix ``_merged``, for the deployed (merged) kernel;
without a small branch the two are the same kernel. ``kernel_has_small`` says which case it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ablate.analyses.result import AnalysisResult, option

if TYPE_CHECKING:
    from torch import nn

SCALAR_NAMES = ("kernel_center3_share", "kernel_skeleton_share", "kernel_center_value", "kernel_distance_corr")


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
    """Depthwise convs, outermost first: a re-param module hides the convs inside it."""
    out: list[tuple[str, Any]] = []
    inside: list[str] = []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if _kernel_size(m) is not None:
            out.append((name, m))
            inside.append(name)
    return out


def find_kernel(model: nn.Module, kernel_size: int | None = 13, image_size: int = 224,
                module: str | None = None, in_chans: int = 3) -> KernelPick:
    """The first stride-1 depthwise conv of ``kernel_size`` (None: the largest) called on the smallest
    feature map of a forward pass at ``image_size`` -- the paper's "first stride-1 13x13 conv in the
    last stage (input 7x7)". ``module`` names one instead."""
    import torch

    found = candidates(model)
    if module is not None:
        named = dict(found)
        if module not in named:
            raise KernelAnalysisError(f"kernels.module: '{module}' is not a depthwise conv of the model; one of "
                                      f"{', '.join(named) or '(none)'}")
        found = [(module, named[module])]
    if not found:
        raise KernelAnalysisError("kernels: the model has no depthwise conv to visualise")
    sizes = {n: _kernel_size(m) for n, m in found}
    wanted = kernel_size if kernel_size is not None else max(s for s in sizes.values() if s is not None)
    found = [(n, m) for n, m in found if sizes[n] == wanted and (module is not None or _stride(m) == 1)]
    if not found:
        raise KernelAnalysisError(f"kernels.kernel_size: no stride-1 depthwise conv of size {wanted}; the model's "
                                  f"are {sorted(set(sizes.values()))}")
    seen: list[tuple[str, tuple[int, int]]] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args, n=n: seen.append((n, tuple(args[0].shape[-2:]))))
             for n, m in found]
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, in_chans, image_size, image_size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    if not seen:
        raise KernelAnalysisError("kernels: no depthwise conv of the wanted size was called in a forward pass")
    smallest = min(s[0] * s[1] for _, s in seen)
    name, size = next((n, s) for n, s in seen if s[0] * s[1] == smallest)
    return KernelPick(name, dict(found)[name], size)


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
    corr = spearmanr(dist.ravel(), agg.ravel()).statistic if k > 1 and np.ptp(agg) > 0 else float("nan")
    share = (lambda mask: float(agg[mask].sum()) / total) if total > 0 else (lambda mask: float("nan"))
    return {"kernel_center3_share": share(centre3), "kernel_skeleton_share": share(skeleton),
            "kernel_center_value": float(agg[c, c]), "kernel_distance_corr": float(corr)}


def kernel_maps(model: nn.Module, kernel_size: int | None = 13, image_size: int = 224,
                module: str | None = None, in_chans: int = 3) -> tuple[KernelPick, np.ndarray, np.ndarray, bool]:
    """(the conv picked, large map, merged map, has small branch): Figure 6's matrices for one model."""
    pick = find_kernel(model, kernel_size, image_size, module, in_chans)
    large, merged, has_small = kernel_weights(pick.module)
    return pick, aggregate(large), aggregate(merged), has_small


def analyze(model: nn.Module, ctx: Any, options: Any) -> AnalysisResult:
    """The ``kernels`` analysis: options ``kernel_size`` (13), ``image_size`` (224), ``module`` (None)."""
    in_chans = int(option(ctx, "in_chans", 3))
    pick, large, merged, has_small = kernel_maps(
        model, option(options, "kernel_size", 13), int(option(options, "image_size", 224)),
        option(options, "module", None), in_chans)
    scalars = dict(summarise(large))
    scalars.update({f"{k}_merged": v for k, v in summarise(merged).items()})
    scalars["kernel_has_small"] = float(has_small)
    scalars["kernel_input_size"] = float(pick.input_size[0])
    return AnalysisResult(scalars=scalars, arrays={"kernel_large": large.astype(np.float32),
                                                   "kernel_merged": merged.astype(np.float32)})


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
