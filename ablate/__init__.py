"""ablate: ablation studies for large-kernel CNN research, from a study file to the paper's tables."""

__version__ = "0.1.0"

from ablate import models  # noqa: E402,F401  (registers ablate's models in timm)
