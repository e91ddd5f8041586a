"""Where trials keep files that outlive them (final weights, for ``init_from`` fine-tuning).

Default ``./ablate-artifacts`` beside where ablate runs, or ``ABLATE_ARTIFACTS``; on a Ray
cluster point it at a filesystem every node shares.
"""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS = "model.pt"


def artifacts_root() -> Path:
    return Path(os.environ.get("ABLATE_ARTIFACTS") or "ablate-artifacts").resolve()


def weights_path(study: str, trial_id: str, root: Path | None = None) -> Path:
    return (root or artifacts_root()) / study / trial_id / WEIGHTS
