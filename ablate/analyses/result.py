"""What an analysis of one trained model returns: numbers a table holds, arrays stored beside the weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


@dataclass
class AnalysisResult:
    """``scalars`` become metrics of the trial (e.g. ``kernel_center3_share``); each entry of ``arrays``
    is written as ``<name>.npy`` next to the trial's weights (e.g. ``kernel_large``)."""

    scalars: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def option(options: Any, name: str, default: Any = None) -> Any:
    """One option of an analysis, whether the options come as a pydantic model, a mapping or None."""
    if options is None:
        return default
    if isinstance(options, Mapping):
        value = options.get(name, default)
    else:
        value = getattr(options, name, default)
    return default if value is None else value
