"""What a dashboard page needs to show the ERF as the paper's Figure 1 and Table 10: per arm, the
log-scaled map Â = log10(A + 1) / max (A averaged over the arm's analysed seeds), downsampled for
the browser, and the r table. numpy only; the dashboard draws it (ablate/dashboard.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ablate.analyses.names import ERF_ARRAY
from ablate.analyses.tables import ErfTable, erf_table
from ablate.artifacts import ArtifactStore
from ablate.store_reads import COMPLETED, StudyRecord


@dataclass
class ErfMap:
    label: str
    trial_ids: list[str]  # the trials whose maps were averaged
    size: int  # side of the stored map A (S)
    image: np.ndarray  # Â downsampled to at most max_side x max_side, float32 in [0, 1]


def downsample(a: np.ndarray, max_side: int) -> np.ndarray:
    """Block means of ``a`` so that neither side exceeds ``max_side`` (the edges that do not fill a
    block are dropped: at most factor - 1 pixels)."""
    f = max(1, -(-max(a.shape) // max_side))
    if f == 1:
        return a
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    return a[:h, :w].reshape(h // f, f, w // f, f).mean((1, 3))


def erf_page(record: StudyRecord, artifacts: str | None = None, max_side: int = 128) -> dict[str, Any]:
    """{"table": ErfTable, "maps": [ErfMap, ...] in the table's row order}; arms without a stored
    ``erf.npy`` have no map. Raises AnalysisTableError when the study declares no erf analysis."""
    from ablate.analyses.erf import log_scale
    from ablate.analyses.worker import load_array

    table: ErfTable = erf_table(record)
    files = ArtifactStore(artifacts)
    by_id = {t.trial_id: t for t in record.trials}
    maps = []
    for row in table.rows:
        found, ids = [], []
        for tid in row.trial_ids:
            path = files.path(record.name, tid, ERF_ARRAY)
            if by_id[tid].status == COMPLETED and files.exists(path):
                found.append(load_array(files, path).astype(np.float64))
                ids.append(tid)
        shapes = {a.shape for a in found}
        if not found or len(shapes) != 1:  # maps of other sizes (changed options mid-way) do not average
            continue
        a_hat = log_scale(np.mean(found, axis=0))
        maps.append(ErfMap(row.label, ids, int(found[0].shape[0]), downsample(a_hat, max_side).astype(np.float32)))
    return {"table": table, "maps": maps}


def erf_page_json(record: StudyRecord, artifacts: str | None = None, max_side: int = 128) -> str:
    """``erf_page`` as JSON (maps as nested lists rounded to 3 decimals), for a page's script."""
    page = erf_page(record, artifacts, max_side)
    t = page["table"]
    return json.dumps({
        "thresholds": t.thresholds, "notes": t.notes,
        "rows": [{"label": r.label, "r": [v[0] for v in r.values], "std": [v[1] for v in r.values],
                  "paper": r.paper, "trials": r.trial_ids} for r in t.rows],
        "maps": [{"label": m.label, "trials": m.trial_ids, "size": m.size,
                  "z": np.round(m.image, 3).tolist()} for m in page["maps"]],
    })
