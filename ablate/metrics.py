"""The names of the metrics ``ablate.trainer.train`` reports, in one place.

``ablate plan`` checks ``metric.name`` and a table's ``metric:`` columns against these, so a typo
(``top-1``) fails before compute; a test runs the trainer and compares what it really reports
with :func:`reported`, so this list cannot drift from the trainer.
"""

from __future__ import annotations

from typing import Any

EVERY_EPOCH = ("epoch", "train_loss", "lr", "epoch_time_s", "img_per_s", "val_loss", "top1", "top5")
EMA_OF = ("val_loss", "top1", "top5")  # also reported as <name>_ema when recipe.ema_momentum is set
CUDA_ONLY = ("peak_mem_gb",)  # on a GPU
DDP_ONLY = ("world_size",)  # with resources.workers > 1
# reported on some epochs only: a resumed trial's first epoch, the last epoch of a re-param model
SOME_EPOCHS = ("resumed_after_epoch", "reparam_max_abs_diff")
# a segmentation trial (model.task: segmentation, ablate.seg_trainer) reports per evaluation interval
SEGMENTATION = ("epoch", "iteration", "train_loss", "lr", "epoch_time_s", "img_per_s", "val_loss", "miou",
                "pixel_acc")
ALL = EVERY_EPOCH + tuple(f"{m}_ema" for m in EMA_OF) + CUDA_ONLY + DDP_ONLY + SOME_EPOCHS + \
    tuple(m for m in SEGMENTATION if m not in EVERY_EPOCH)


def every_epoch(recipe: dict[str, Any], *, cuda: bool, ddp: bool) -> list[str]:
    """Metrics present in every epoch's report of a trial with this recipe and placement."""
    names = list(EVERY_EPOCH)
    if recipe.get("ema_momentum"):
        names += [f"{m}_ema" for m in EMA_OF]
    if cuda:
        names += CUDA_ONLY
    if ddp:
        names += DDP_ONLY
    return names


def reported(recipe: dict[str, Any], *, cuda: bool, ddp: bool) -> list[str]:
    """Every metric such a trial may report (``every_epoch`` plus the occasional ones)."""
    return every_epoch(recipe, cuda=cuda, ddp=ddp) + list(SOME_EPOCHS)


def reported_by(config: dict[str, Any], *, cuda: bool, ddp: bool) -> list[str]:
    """Every metric the trial ``config`` may report: a segmentation trial's or ``reported``."""
    if config["model"].get("task") == "segmentation":
        return list(SEGMENTATION) + ["resumed_after_epoch"]
    return reported(config["recipe"], cuda=cuda, ddp=ddp)
