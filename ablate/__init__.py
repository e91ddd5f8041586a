"""ablate: ablation studies for large-kernel CNN research, from a study file to the paper's tables.

Importing the package is cheap (no torch, timm or Ray), so commands that only read results start
at once. ``import ablate.models`` registers ablate's models in timm's registry (the trainer, the
planner and ``ablate models`` do it themselves).
"""

__version__ = "0.2.0"
