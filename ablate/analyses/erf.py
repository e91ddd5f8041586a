"""Effective receptive field (Appendix B, Table 10), as the official RepLKNet code computes it
(``erf/visualize_erf.py`` and ``erf/analyze_erf.py``; docs/analyses.md says where ablate differs).

For each of the first N images of a split, resized to S x S: the gradient, with respect to the
input, of the sum over channels of the positive activations at the centre of the last feature map
(index h//2, w//2); its negative parts removed, then summed over the colour channels. A is the mean
of these maps over the images (an image whose map is NaN is skipped). Table 10's r at threshold t
is computed on Â = log10(A + 1) / max: the side 2i + 1 of the smallest centred square (i >= 1)
holding strictly more than t of Â's sum, r = side² / (H W).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from ablate.analyses import AnalysisResult, TrialContext, register
from ablate.analyses.names import ERF_ARRAY, ERF_IMAGES, ERF_SIZE, ERF_SKIPPED, erf_metric

if TYPE_CHECKING:
    import torch
    from torch import nn

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# -- the ratio r (numpy only) -----------------------------------------------------------------------
def log_scale(a: np.ndarray) -> np.ndarray:
    """Â = log10(A + 1) / max(log10(A + 1)): what the ratios and the heatmaps use."""
    a = np.log10(np.asarray(a, dtype=np.float64) + 1.0)
    top = a.max()
    if not np.isfinite(top) or top <= 0:
        raise ValueError("the ERF map is zero everywhere (no positive activation at the centre of the feature map "
                         "for any image), so its area ratios are undefined")
    return a / top


def square_sums(a: np.ndarray) -> np.ndarray:
    """Sums of ``a`` over the centred squares of side 2i + 1, for i = 1 .. min(H, W)//2 - 1 (index
    i - 1), the square being rows H//2 - i .. H//2 + i and columns W//2 - i .. W//2 + i."""
    a = np.asarray(a, dtype=np.float64)
    h, w = a.shape
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = a.cumsum(0).cumsum(1)
    i = np.arange(1, min(h, w) // 2)
    top, bottom, left, right = h // 2 - i, h // 2 + i + 1, w // 2 - i, w // 2 + i + 1
    return integral[bottom, right] - integral[top, right] - integral[bottom, left] + integral[top, left]


def area_ratios(a_hat: np.ndarray, thresholds: Sequence[float]) -> list[float]:
    """r (a fraction of the area) for each threshold t: the first centred square of side 2i + 1
    (i >= 1) whose sum is strictly greater than t times the map's sum. Where no such square fits
    in the map (the official code then fails) r is 1: only the whole map holds that much."""
    a_hat = np.asarray(a_hat, dtype=np.float64)
    h, w = a_hat.shape
    total, sums = a_hat.sum(), square_sums(a_hat)
    out = []
    for t in thresholds:
        hit = np.flatnonzero(sums > t * total)
        out.append(float((2 * (hit[0] + 1) + 1) ** 2 / (h * w)) if hit.size else 1.0)
    return out


# -- the map A (torch) ------------------------------------------------------------------------------
def last_feature_map(model: "nn.Module", x: "torch.Tensor", final_norm: bool = False) -> "torch.Tensor":
    """The model's last feature map before pooling and head: ``forward_features``, without the final
    norm where the model offers that (``forward_features(x, final_norm=False)``, as ablate's
    RepLKNet; the official code's choice). Models without a final norm (timm's ResNets: layer4)
    give the same either way."""
    fn = model.forward_features
    if not final_norm and "final_norm" in inspect.signature(fn).parameters:
        return fn(x, final_norm=False)
    return fn(x)


def contribution_maps(model: "nn.Module", x: "torch.Tensor", final_norm: bool = False) -> "torch.Tensor":
    """Per image of the batch ``x`` (B x C x H x W): sum over C of max(d s / d x, 0), where s is
    the sum over channels of the positive activations at the centre (h//2, w//2) of the last
    feature map. Images are independent in eval mode, so one backward pass serves the batch."""
    import torch

    x = x.detach().clone().requires_grad_(True)
    y = last_feature_map(model, x, final_norm)
    centre = y[:, :, y.shape[2] // 2, y.shape[3] // 2]
    (grad,) = torch.autograd.grad(torch.relu(centre).sum(), x)
    return grad.clamp(min=0).sum(1)


def aggregate(model: "nn.Module", batches: Iterable["torch.Tensor"], final_norm: bool = False,
              device: str = "cpu", progress: Any = None) -> tuple[np.ndarray, int, int]:
    """(A, images used, images skipped): the mean contribution map over every image of ``batches``
    whose map sums to a finite number (the official code skips NaN maps)."""
    import torch

    model.eval().requires_grad_(False)
    total: torch.Tensor | None = None
    used = skipped = 0
    for x in batches:
        maps = contribution_maps(model, x.to(device), final_norm).double()
        ok = torch.isfinite(maps.sum((1, 2)))
        skipped += int((~ok).sum())
        used += int(ok.sum())
        part = maps[ok].sum(0)
        total = part if total is None else total + part
        if progress is not None:
            progress(len(x))
    if total is None or used == 0:
        raise ValueError(f"no image gave a finite ERF map ({skipped} skipped)")
    return (total / used).cpu().numpy(), used, skipped


# -- the images -------------------------------------------------------------------------------------
def erf_images(dataset: dict[str, Any], split: str, n: int, size: int) -> "torch.Tensor":
    """The first ``n`` images of ``split`` in dataset order (an image folder: sorted class folders,
    sorted files, as torchvision's ImageFolder), resized to ``size`` x ``size`` bicubic without
    keeping the aspect ratio or cropping, normalised (ImageNet mean/std for folders, the dataset's
    own statistics for Fashion-MNIST). Fewer when the split has fewer."""
    import torch
    import torch.nn.functional as F

    from ablate.data import FASHION_MNIST_DIR, FASHION_MNIST_FILES, FMNIST_MEAN, FMNIST_STD, _idx_file, _root, read_idx

    if dataset["name"] == "fashion_mnist":
        root = _root(dataset) or __import__("pathlib").Path(FASHION_MNIST_DIR)
        raw = read_idx(_idx_file(root, FASHION_MNIST_FILES[split][0]))[:n]
        x = torch.from_numpy(raw.copy()).float().div_(255).sub_(FMNIST_MEAN).div_(FMNIST_STD)[:, None]
        return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    root = _root(dataset)
    tf = transforms.Compose([transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
                             transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    folder = ImageFolder(str(root / split), transform=tf)
    return torch.stack([folder[i][0] for i in range(min(n, len(folder)))])


# -- the registered analysis ------------------------------------------------------------------------
def _scalars(options: Any) -> list[str]:
    return [erf_metric(t) for t in options.thresholds] + [ERF_IMAGES, ERF_SKIPPED, ERF_SIZE]


@register("erf", scalars=_scalars, arrays=lambda options: [ERF_ARRAY], speed_only=("batch_size",),
          presentation=("rows",))
def compute(model: "nn.Module", ctx: TrialContext, options: Any, progress: Any = None) -> AnalysisResult:
    """A (float32, ``erf.npy``), r at each threshold in percent (``erf_r20`` ...), N used and skipped, S."""
    images = erf_images(ctx.config["dataset"], options.split, options.images, options.size)
    batches = (images[i:i + options.batch_size] for i in range(0, len(images), options.batch_size))
    a, used, skipped = aggregate(model, batches, options.final_norm, ctx.device, progress)
    ratios = area_ratios(log_scale(a), options.thresholds)
    scalars = {erf_metric(t): 100.0 * r for t, r in zip(options.thresholds, ratios)}
    scalars.update({ERF_IMAGES: float(used), ERF_SKIPPED: float(skipped), ERF_SIZE: float(options.size)})
    return AnalysisResult(scalars=scalars, arrays={ERF_ARRAY: a.astype(np.float32)})
