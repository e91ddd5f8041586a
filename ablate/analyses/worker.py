"""One analysis of one trial, in the process that computes it (a Ray task, or a test): build the
trial's model, load its stored weights, compute, save the arrays beside the weights, return the
scalars. No Ray and no database here: the driver writes the scalars."""

from __future__ import annotations

import io
from typing import Any

from ablate.analyses import TrialContext, get
from ablate.artifacts import BEST, WEIGHTS, ArtifactStore

WEIGHT_FILES = {"final": WEIGHTS, "best": BEST}


class MissingWeights(FileNotFoundError):
    """The trial's stored weights are not in the artifact store."""


def load_trained(config: dict[str, Any], store: ArtifactStore, study: str, trial_id: str, which: str = "final"):
    """The trial's model (as its config builds it, for its dataset's classes and channels) with
    its stored ``final`` (model.pt) or ``best`` (best.pt) weights, in eval mode."""
    from ablate.data import dataset_info
    from ablate.models import build_model

    path = store.path(study, trial_id, WEIGHT_FILES[which])
    if not store.exists(path):
        raise MissingWeights(f"no {which} weights at {store.display(path)} (set --artifacts / ABLATE_ARTIFACTS "
                             f"to where the study ran; artifacts.keep must keep '{which}')")
    classes, chans = dataset_info(config["dataset"], int(config["model"].get("kwargs", {}).get("num_classes", 1000)))
    model = build_model(config["model"], classes, chans)
    model.load_state_dict(store.load(path))
    return model.eval()


def save_array(store: ArtifactStore, path: str, array: Any) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    store.write_bytes(path, buf.getvalue())


def load_array(store: ArtifactStore, path: str) -> Any:
    import numpy as np

    return np.load(io.BytesIO(store.read_bytes(path)), allow_pickle=False)


def run_analysis(name: str, options: dict[str, Any], study: str, trial_id: str, config: dict[str, Any],
                 artifacts: str | None = None, device: str | None = None, progress: Any = None) -> dict[str, float]:
    """Run analysis ``name`` (options as the study file's JSON) on a trial's stored weights; its
    arrays are written to the artifact store, its scalars returned."""
    import torch

    from ablate.study import AnalysesSpec

    analysis = get(name)
    opts = getattr(AnalysesSpec.model_validate({name: options}), name)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    store = ArtifactStore(artifacts)
    model = load_trained(config, store, study, trial_id, opts.weights).to(dev)
    ctx = TrialContext(study=study, trial_id=trial_id, config=config, device=dev, store=store)
    kwargs = {"progress": progress} if progress is not None else {}
    result = analysis.compute(model, ctx, opts, **kwargs)
    for file, array in result.arrays.items():
        save_array(store, store.path(study, trial_id, file), array)
    return {k: float(v) for k, v in result.scalars.items()}
