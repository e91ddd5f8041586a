"""Shape bias on cue-conflict images (RepLKNet Appendix C, Figure 5; Geirhos et al., ICLR 2019).

The user supplies the cue-conflict stimuli (``analyses: {shape_bias: {folder: PATH}}``) in the model-vs-human layout: one subfolder per shape
category (the 16 of ``imagenet16.CATEGORIES``), each image named ``<shape><n>-<texture><m>.png``
(an optional ``<prefix>_`` before it is ignored), e.g. ``cat/cat7-elephant1.png``: a cat's shape
with an elephant's texture. The folder names the shape; the file name's last ``-`` part the texture.

For every image the model's 1000 ImageNet softmax probabilities become 16 by the toolbox's mapping
(mean probability of each category's ImageNet classes) and the decision is the largest. Images whose
shape and texture are the same category are left out (no conflict). Then, as the toolbox's
``ShapeBias`` analysis:

    shape_bias = shape decisions / (shape decisions + texture decisions)

pooled over all images (``shape_bias``: the toolbox's vertical line per model in Fig. 5) and per shape
category (``shape_bias_<category>``: Fig. 5's points); ``shape_bias_category_mean`` is the plain mean of
the categories' values (the paper's caption calls the lines "averages across categories"). Decisions
that are neither shape nor texture count in neither; ``shape_bias_shape_frac`` /
``shape_bias_texture_frac`` are the fractions of all conflict images decided by shape / texture.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from ablate.analyses.imagenet16 import CATEGORIES, IMAGENET_INDICES
from ablate.analyses import AnalysisResult, TrialContext, register

if TYPE_CHECKING:
    from torch import nn

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPEG", ".PNG", ".JPG")


class ShapeBiasError(ValueError):
    """The cue-conflict folder or the model does not fit the analysis (a user error: exit 2)."""


@dataclass(frozen=True)
class CueImage:
    path: Path
    shape: str
    texture: str


def _category(part: str, path: Path) -> str:
    name = re.sub(r"\d+$", "", part)
    if name not in IMAGENET_INDICES:
        raise ShapeBiasError(f"analyses.shape_bias.folder: {path}: '{name}' in the file name is not one of the 16 categories "
                             f"({', '.join(CATEGORIES)}); expected names like airplane1-bicycle2.png")
    return name


def parse_name(path: Path) -> tuple[str, str]:
    """(shape, texture) from a cue-conflict file name, e.g. ``cat7-elephant1.png`` -> (cat, elephant)."""
    stem = path.name.rsplit(".", 1)[0].split("_")[-1]
    parts = stem.split("-")
    if len(parts) != 2 or not all(parts):
        raise ShapeBiasError(f"analyses.shape_bias.folder: {path}: expected a file name <shape><n>-<texture><m>.png, "
                             f"e.g. airplane1-bicycle2.png")
    return _category(parts[0], path), _category(parts[1], path)


def read_folder(root: str | Path) -> list[CueImage]:
    """Every image of a cue-conflict folder, shape from its subfolder, texture from its name. Raises
    ``ShapeBiasError`` (one line naming the path) for a missing folder, a subfolder that is not a
    category, a name that does not parse or names another shape than its folder, or no conflict image."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ShapeBiasError(f"analyses.shape_bias.folder: {root}: no such folder; expected the cue-conflict images in "
                             f"one subfolder per shape category ({', '.join(CATEGORIES)})")
    images: list[CueImage] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if sub.name not in IMAGENET_INDICES:
            raise ShapeBiasError(f"analyses.shape_bias.folder: {sub}: '{sub.name}' is not one of the 16 categories "
                                 f"({', '.join(CATEGORIES)})")
        for f in sorted(p for p in sub.iterdir() if p.suffix in IMAGE_SUFFIXES):
            shape, texture = parse_name(f)
            if shape != sub.name:
                raise ShapeBiasError(f"analyses.shape_bias.folder: {f}: the name says shape '{shape}' but the folder is "
                                     f"'{sub.name}'")
            images.append(CueImage(f, shape, texture))
    if not any(i.shape != i.texture for i in images):
        raise ShapeBiasError(f"analyses.shape_bias.folder: {root}: no cue-conflict images (shape and texture differing) in "
                             f"category subfolders; expected e.g. {root}/cat/cat1-elephant2.png")
    return images


def to_16_classes(probabilities: np.ndarray) -> np.ndarray:
    """(N, 1000) ImageNet probabilities -> (N, 16) category scores: the mean of each category's classes."""
    probabilities = np.asarray(probabilities)
    if probabilities.shape[-1] != 1000:
        raise ShapeBiasError(f"shape_bias: needs a 1000-class ImageNet classifier, the model gives "
                             f"{probabilities.shape[-1]} outputs")
    return np.stack([probabilities[..., list(IMAGENET_INDICES[c])].mean(axis=-1) for c in CATEGORIES], axis=-1)


def decisions(probabilities: np.ndarray) -> list[str]:
    """The 16-way decision per image: the category with the largest mean probability."""
    return [CATEGORIES[i] for i in to_16_classes(probabilities).argmax(axis=-1)]


def shape_bias(images: Sequence[CueImage], decided: Sequence[str]) -> dict[str, float]:
    """The scalars of the module docstring from the images and the model's decision for each."""
    pairs = [(i, d) for i, d in zip(images, decided, strict=True) if i.shape != i.texture]

    def bias(sel: Iterable[tuple[CueImage, str]]) -> tuple[float, int, int, int]:
        sel = list(sel)
        s = sum(d == i.shape for i, d in sel)
        t = sum(d == i.texture for i, d in sel)
        return (s / (s + t) if s + t else float("nan")), s, t, len(sel)

    pooled, s, t, n = bias(pairs)
    out = {"shape_bias": pooled, "shape_bias_shape_frac": s / n if n else float("nan"),
           "shape_bias_texture_frac": t / n if n else float("nan"),
           "shape_bias_images": float(n)}
    per = {c: bias(p for p in pairs if p[0].shape == c)[0] for c in CATEGORIES if any(p[0].shape == c for p in pairs)}
    out.update({f"shape_bias_{c}": v for c, v in per.items()})
    finite = [v for v in per.values() if v == v]
    out["shape_bias_category_mean"] = float(np.mean(finite)) if finite else float("nan")
    return out


def predict(model: nn.Module, images: Sequence[CueImage], image_size: int = 224, batch_size: int = 32,
            device: Any = None) -> np.ndarray:
    """(N, 1000) softmax probabilities of ``model`` on the images: resized to ``image_size`` (whole image,
    no crop), normalized with the model's timm data config (ImageNet mean/std by default)."""
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    cfg = resolve_data_config({}, model=model)
    transform = create_transform(input_size=(3, image_size, image_size), interpolation=cfg["interpolation"],
                                 mean=cfg["mean"], std=cfg["std"], crop_pct=1.0)
    p = next(model.parameters())
    device = p.device if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = torch.stack([transform(Image.open(i.path).convert("RGB"))
                                     for i in images[start:start + batch_size]])
                out.append(model(batch.to(device, p.dtype)).float().softmax(-1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out)


def folder_of(options: Any) -> Path:
    """The options' folder with ``~`` and ``$VARS`` expanded."""
    import os

    return Path(os.path.expandvars(os.path.expanduser(str(options.folder))))


def check(options: Any) -> list[CueImage]:
    """Validate the folder before any model is loaded (``ShapeBiasError`` names what is wrong): for
    ``plan``'s checks, so a malformed folder is an exit-2 error before any compute."""
    return read_folder(folder_of(options))


SCALARS = ("shape_bias", "shape_bias_category_mean", "shape_bias_shape_frac", "shape_bias_texture_frac",
           "shape_bias_images")
DECISIONS = "shape_bias_decisions.npy"


@register("shape_bias", scalars=lambda options: list(SCALARS), arrays=lambda options: [DECISIONS],
          speed_only=("batch_size",))
def analyze(model: nn.Module, ctx: TrialContext | None, options: Any) -> AnalysisResult:
    """The ``shape_bias`` analysis (``ShapeBiasOptions``: ``folder``; ``image_size`` 224 and ``batch_size``
    32 when the options have them). Scalars as the module docstring (a per-category value only where
    that category got a shape or texture decision; nothing NaN is stored). Array
    ``shape_bias_decisions.npy``: the decision per conflict image (index into ``CATEGORIES``, file order)."""
    images = [i for i in check(options) if i.shape != i.texture]
    probs = predict(model, images, int(getattr(options, "image_size", 224)), int(getattr(options, "batch_size", 32)),
                    getattr(ctx, "device", None))
    decided = decisions(probs)
    scalars = {k: v for k, v in shape_bias(images, decided).items() if v == v}
    return AnalysisResult(scalars=scalars,
                          arrays={DECISIONS: np.array([CATEGORIES.index(d) for d in decided], dtype=np.int16)})


def figure5(models: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Figure 5 as a plotly figure dict: for each model (name -> its scalars) a point per category at its
    shape bias and a vertical line at the pooled shape bias; categories down the y axis."""
    import plotly.graph_objects as go

    fig = go.Figure()
    colors = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
    for k, (name, scalars) in enumerate(models.items()):
        color = colors[k % len(colors)]
        cats = [c for c in CATEGORIES if f"shape_bias_{c}" in scalars]
        fig.add_trace(go.Scatter(x=[scalars[f"shape_bias_{c}"] for c in cats], y=cats, mode="markers", name=name,
                                 legendgroup=name, marker=dict(color=color, size=10)))
        fig.add_trace(go.Scatter(x=[scalars["shape_bias"]] * 2, y=[CATEGORIES[0], CATEGORIES[-1]], mode="lines",
                                 name=f"{name} (mean)", legendgroup=name, showlegend=False,
                                 line=dict(color=color)))
    fig.update_layout(title="Shape bias on cue-conflict images (RepLKNet Fig. 5)",
                      xaxis=dict(title="fraction of 'shape' decisions", range=[0, 1]),
                      yaxis=dict(title="shape category", categoryorder="array", categoryarray=list(CATEGORIES)))
    return fig.to_dict()
