"""Semantic segmentation scores from a confusion matrix accumulated over the whole validation set.

As mmsegmentation's ``mean_iou``: per class IoU = TP / (TP + FP + FN) over all pixels of all images,
classes that appear in neither the labels nor the predictions are left out of the mean (NaN), mIoU the
mean over the rest; pixel accuracy (mmseg's aAcc) = correct pixels / labelled pixels. Pixels labelled
``ignore_index`` (255) count nowhere.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = 255


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``num_classes x num_classes`` counts, rows the true class and columns the predicted one."""
    keep = target != ignore_index
    t, p = target[keep].long(), pred[keep].long()
    return torch.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def scores(cm: torch.Tensor) -> dict[str, float]:
    """{"miou", "pixel_acc"} in percent (as the paper prints mIoU), from a confusion matrix."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = tp / union  # NaN where a class is in neither labels nor predictions
    labelled = cm.sum()
    return {"miou": 100 * float(iou.nanmean()) if bool((union > 0).any()) else 0.0,
            "pixel_acc": 100 * float(tp.sum() / labelled) if labelled > 0 else 0.0}
