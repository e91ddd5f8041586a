"""Appendix A as named training recipes. A study's ``recipe.preset`` names one; every field the
study sets overrides it. Values the appendix does not state are inherited from the recipe it says
it follows, and each such choice is listed in ``assumed``.
"""

from __future__ import annotations

from typing import Any

RANDAUG = "rand-m9-mstd0.5-inc1"

_MOBILENETV2 = dict(
    opt="sgd", momentum=0.9, batch_size=32, gpus=8, weight_decay=4e-5, lr=0.1, warmup_epochs=5, sched="cosine",
    epochs=100, resolution=224, auto_augment=None, mixup=0.0, cutmix=0.0, label_smoothing=0.0, re_prob=0.0,
    drop_path_rate=0.0, ema_momentum=None, layer_decay=None)

_REPLKNET = dict(
    opt="adamw", momentum=0.9, batch_size=64, gpus=32, weight_decay=0.05, lr=4e-3, warmup_epochs=10,
    sched="cosine", epochs=120, resolution=224, auto_augment=RANDAUG, mixup=0.8, cutmix=1.0, label_smoothing=0.1,
    re_prob=0.25, drop_path_rate=0.3, ema_momentum=None, layer_decay=None)

_FINETUNE_384 = dict(_REPLKNET, batch_size=32, gpus=32, lr=4e-4, warmup_epochs=1, epochs=30, ema_momentum=1e-4,
                     mixup=0.0, cutmix=0.0, resolution=384)

_IN22K_TO_1K_224 = dict(_FINETUNE_384, gpus=16, batch_size=32, drop_path_rate=0.2, resolution=224)

# Table 11's ADE20K fine-tuning (Appendix D: "ADE20K (80K iterations) ... identical to Sec. 4.2"): UperNet
# as the Swin / ConvNeXt mmseg configs train it; one "epoch" is one evaluation interval (ablate.seg_trainer)
_ADE20K_UPERNET = dict(
    opt="adamw", momentum=0.9, batch_size=2, gpus=8, weight_decay=0.05, lr=1e-4, warmup_epochs=0, warmup_steps=1500,
    warmup_lr=1e-10, min_lr=0.0, sched="poly", epochs=10, max_steps_per_epoch=8000, resolution=512,
    auto_augment=None, mixup=0.0, cutmix=0.0, label_smoothing=0.0, re_prob=0.0, drop_path_rate=0.4,
    ema_momentum=None, layer_decay=None)

PRESETS: dict[str, dict[str, Any]] = {
    "mobilenetv2-in1k": _MOBILENETV2,
    "replknet-in1k": _REPLKNET,
    "replknet-31b-300ep": dict(_REPLKNET, epochs=300, drop_path_rate=0.5),
    "finetune-384": _FINETUNE_384,
    "in22k-pretrain": dict(_REPLKNET, epochs=90, batch_size=32, gpus=128, drop_path_rate=0.1),
    "in22k-to-1k-224": _IN22K_TO_1K_224,
    "in22k-to-1k-384": dict(_IN22K_TO_1K_224, gpus=32, batch_size=16, drop_path_rate=0.3, resolution=384),
    "xl-finetune-320": dict(_REPLKNET, epochs=30, lr=1e-4, layer_decay=0.4, resolution=320, warmup_epochs=5),
    "ade20k-upernet-80k": _ADE20K_UPERNET,
}

SOURCES: dict[str, str] = {
    "mobilenetv2-in1k": "8 GPUs, SGD momentum 0.9, 32 per GPU, 224x224, wd 4e-5, 5-epoch warmup, lr 0.1, cosine, "
                        "100 epochs; random cropping and left-right flipping only.",
    "replknet-in1k": "32 GPUs x 64, 120 epochs, AdamW momentum 0.9, wd 0.05, lr 4e-3, cosine, 10-epoch warmup, "
                     "RandAugment rand-m9-mstd0.5-inc1, label smoothing 0.1, mixup 0.8, CutMix 1.0, "
                     "random erasing 25%, drop path 30%.",
    "replknet-31b-300ep": "RepLKNet-31B of Sec. 4.3: as replknet-in1k but 300 epochs and drop path 50%.",
    "finetune-384": "32 GPUs x 32, lr 4e-4, cosine, 1-epoch warmup, 30 epochs, EMA momentum 1e-4, the same "
                    "RandAugment, no CutMix nor mixup; 384x384.",
    "in22k-pretrain": "128 GPUs x 32, 90 epochs, drop path 10%; otherwise as replknet-in1k.",
    "in22k-to-1k-224": "16 GPUs x 32, drop path 20%, lr 4e-4, cosine, EMA momentum 1e-4, 30 epochs, same "
                       "RandAugment, no CutMix nor mixup.",
    "in22k-to-1k-384": "32 GPUs x 16, drop path 30%; otherwise as in22k-to-1k-224; 384x384.",
    "xl-finetune-320": "320x320, 30 epochs following BEiT, lr 1e-4, stage-wise lr decay 0.4.",
    "ade20k-upernet-80k": "Table 11 / Appendix D: UperNet fine-tuned on ADE20K for 80K iterations (epochs 10 x "
                          "max_steps_per_epoch 8000: mmseg's schedule_80k, evaluating every 8000), 512x512 crops. "
                          "ConvNeXt's semantic_segmentation configs (upernet_convnext_*_512_160k_ade20k_ss.py, "
                          "github.com/facebookresearch/ConvNeXt): AdamW lr 1e-4, betas (0.9, 0.999), wd 0.05; "
                          "poly decay power 1.0 to min_lr 0, linear warmup 1500 iterations from 1e-6 x lr "
                          "(warmup_lr 1e-10); 8 GPUs x 2 images (batch 16); drop path 0.4 (ConvNeXt-T and -B).",
}

ASSUMED: dict[str, list[str]] = {
    "finetune-384": ["optimizer, wd, label smoothing, random erasing and drop path: not stated; kept from "
                     "replknet-in1k"],
    "in22k-to-1k-224": ["warmup 1 epoch and the remaining values: not stated; kept from finetune-384"],
    "in22k-to-1k-384": ["values not stated are kept from in22k-to-1k-224"],
    "xl-finetune-320": ["BEiT's fine-tuning recipe is cited, not listed: warmup 5 epochs (BEiT's) and the "
                        "remaining values are kept from replknet-in1k"],
    "ade20k-upernet-80k": [
        "the paper names no values; they are the Swin / ConvNeXt UperNet setup it says it follows",
        "drop path: ConvNeXt's configs use 0.4 (T), 0.3 (S), 0.4 (B), RepLKNet-31B's 0.5 "
        "(DingXiaoH/RepLKNet-pytorch segmentation/configs/RepLKNet_upernet.py); set it per row in the study",
        "layer_decay: none, as RepLKNet's config (ConvNeXt's own uses stage-wise 0.9 over 12 layers)",
        "warmup: timm's linear warmup to the base lr; mmcv's multiplies the poly-decayed lr (a <2% difference "
        "over the first 1500 of 80K iterations)",
        "evaluation: single-scale, whole image at the short side 512 (RepLKNet's test_cfg; ConvNeXt's slides "
        "512x512 windows with stride 341)"],
}


def resolve(preset: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """The preset's values under the study's own: ``given`` wins field by field.

    The preset's ``resolution`` is the input size the recipe was designed for; it is not a training
    setting (``dataset.image_size`` is), so it stays out of the trial (see ``paper_resolution``)."""
    if preset is None:
        return dict(given)
    if preset not in PRESETS:
        raise ValueError(f"unknown recipe preset '{preset}'; one of {', '.join(PRESETS)}")
    values = {k: v for k, v in PRESETS[preset].items() if k != "resolution"}
    return {**values, **given}


def paper_resolution(preset: str) -> int:
    """The input size (square) Appendix A gives for a recipe; a study sets it as dataset.image_size."""
    return int(PRESETS[preset]["resolution"])


def total_batch(recipe: dict[str, Any]) -> int:
    return int(recipe["batch_size"]) * int(recipe.get("gpus", 1))
