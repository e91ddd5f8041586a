"""Names of what analyses store, in one place and without heavy imports (``plan`` and ``table``
read them): metric names per threshold, array file names."""

from __future__ import annotations

ERF_ARRAY = "erf.npy"  # the aggregated map A, before log scaling
ERF_IMAGES = "erf_images"  # N actually averaged (images whose map was NaN are skipped, as the official code)
ERF_SKIPPED = "erf_skipped"
ERF_SIZE = "erf_size"


def percent_text(t: float) -> str:
    """0.2 -> '20', 0.995 -> '99.5'."""
    return f"{t * 100:.6g}"


def erf_metric(t: float) -> str:
    """The metric holding r at threshold ``t`` (percent of the map's area): 0.2 -> 'erf_r20',
    0.995 -> 'erf_r99p5'."""
    return "erf_r" + percent_text(t).replace(".", "p")
