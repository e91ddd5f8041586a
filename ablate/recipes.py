"""Appendix A as named training recipes. A study's ``recipe.preset`` names one; every field the
study sets overrides it.

Where each value comes from (``source(preset, field)``, shown by ``ablate recipes show``):

* ``paper``: Appendix A states it (``PAPER_FIELDS``). Where the official repository's command uses
  another value, the paper's is kept and the official one is shown beside it.
* ``official``: the appendix is silent and the official repository (DingXiaoH/RepLKNet-pytorch) has a
  command for this recipe (``OFFICIAL``: the README's command line over ``main.py``'s defaults for
  flags it does not set); its value is taken, e.g. fine-tuning with weight decay 1e-8 and layer decay 0.7.
* ``assumed``: silent in both; inherited from the recipe the appendix says it follows (``ASSUMED``).
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

# fine-tuning: the appendix's values, then (silent there) the official commands' wd 1e-8, layer decay 0.7
_FINETUNE = dict(weight_decay=1e-8, layer_decay=0.7, min_lr=1e-6)
_FINETUNE_384 = dict(_REPLKNET, batch_size=32, gpus=32, lr=4e-4, warmup_epochs=1, epochs=30, ema_momentum=1e-4,
                     mixup=0.0, cutmix=0.0, resolution=384, **_FINETUNE, drop_path_rate=0.8)

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
    "replknet-31b-300ep": dict(_REPLKNET, epochs=300, drop_path_rate=0.5, ema_momentum=1e-4, min_lr=1e-6),
    "finetune-384": _FINETUNE_384,
    "in22k-pretrain": dict(_REPLKNET, epochs=90, batch_size=32, gpus=128, drop_path_rate=0.1, min_lr=1e-6),
    "in22k-to-1k-224": _IN22K_TO_1K_224,
    "in22k-to-1k-384": dict(_IN22K_TO_1K_224, gpus=32, batch_size=16, drop_path_rate=0.3, resolution=384,
                            min_lr=3e-4),
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
    "mobilenetv2-in1k": ["label smoothing, drop path, EMA: not stated (\"only random cropping and flipping\"); "
                         "off. The official repository has no MobileNetV2 command"],
    "replknet-in1k": ["EMA, layer decay, min lr: not stated and the official README has no 120-epoch command; "
                      "off / 0 (its main.py defaults min_lr to 1e-6)"],
    "xl-finetune-320": ["BEiT's fine-tuning recipe is cited, not listed, and the official repository has no XL "
                        "fine-tuning command: warmup 5 epochs (BEiT's) and the remaining values are kept from "
                        "replknet-in1k"],
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

# --- provenance -------------------------------------------------------------------------------------

_RUN = ("epochs", "batch_size", "gpus")
_IN1K_STATED = frozenset(("opt", "momentum", "batch_size", "gpus", "weight_decay", "lr", "warmup_epochs", "sched",
                          "epochs", "resolution", "auto_augment", "mixup", "cutmix", "label_smoothing", "re_prob",
                          "drop_path_rate"))
_FT_STATED = frozenset(("gpus", "batch_size", "lr", "sched", "warmup_epochs", "epochs", "ema_momentum", "auto_augment",
                        "mixup", "cutmix", "resolution"))
PAPER_FIELDS: dict[str, frozenset[str]] = {
    # "we only use random cropping and left-right flipping": no RandAugment, mixup, CutMix, erasing
    "mobilenetv2-in1k": frozenset(("opt", "momentum", "batch_size", "gpus", "resolution", "weight_decay", "warmup_epochs",
                                   "lr", "sched", "epochs", "auto_augment", "mixup", "cutmix", "re_prob")),
    "replknet-in1k": _IN1K_STATED,
    "replknet-31b-300ep": _IN1K_STATED,          # "the same configurations except ..."
    "finetune-384": _FT_STATED,
    "in22k-pretrain": _IN1K_STATED,              # "the other configurations are the same as ... ImageNet-1K"
    "in22k-to-1k-224": (_FT_STATED | {"drop_path_rate"}) - {"warmup_epochs"},
    "in22k-to-1k-384": (_FT_STATED | {"drop_path_rate"}) - {"warmup_epochs"},
    "xl-finetune-320": frozenset(("resolution", "epochs", "lr", "layer_decay")),
    # "ADE20K (80K iterations)" (10 evaluations x 8000 iterations), and the UperNet setup the paper says it
    # follows (Swin / ConvNeXt's mmseg configs, cited in SOURCES) for the optimizer, schedule and batch
    "ade20k-upernet-80k": frozenset(("epochs", "max_steps_per_epoch", "opt", "lr", "weight_decay", "sched",
                                     "warmup_steps", "batch_size", "gpus")),
}
"""The fields Appendix A states for each recipe (directly or by "the same as")."""

OFFICIAL_README = "github.com/DingXiaoH/RepLKNet-pytorch README.md (commit b76808a)"
# main.py's defaults for the flags the README's commands do not set (AdamW, RandAugment, smoothing 0.1,
# erasing 0.25, mixup 0.8 / CutMix 1.0, min_lr 1e-6; EMA and layer decay off)
_MAIN_DEFAULTS = dict(opt="adamw", momentum=0.9, weight_decay=0.05, sched="cosine", auto_augment=RANDAUG,
                      label_smoothing=0.1, re_prob=0.25, mixup=0.8, cutmix=1.0, min_lr=1e-6, ema_momentum=None,
                      layer_decay=None, drop_path_rate=0.0)
_FT_FLAGS = dict(lr=4e-4, epochs=30, weight_decay=1e-8, cutmix=0.0, mixup=0.0, ema_momentum=1e-4, warmup_epochs=1,
                 layer_decay=0.7)  # --model_ema true: decay 0.9999 (main.py), i.e. momentum 1e-4
OFFICIAL: dict[str, tuple[str, dict[str, Any]]] = {
    "replknet-31b-300ep": ("'Pretrain RepLKNet-31B on ImageNet-1K' (4 nodes x 8 GPUs)", dict(
        _MAIN_DEFAULTS, drop_path_rate=0.5, batch_size=64, gpus=32, lr=4e-3, ema_momentum=1e-4, warmup_epochs=10,
        epochs=300)),
    "finetune-384": ("'Finetune the ImageNet-1K-pretrained (224x224) RepLKNet-31B with 384x384'", dict(
        _MAIN_DEFAULTS, **_FT_FLAGS, drop_path_rate=0.8, batch_size=32, gpus=32)),
    "in22k-pretrain": ("'Pretrain RepLKNet-31B on ImageNet-22K' (16 nodes x 8 GPUs)", dict(
        _MAIN_DEFAULTS, drop_path_rate=0.1, batch_size=32, gpus=128, lr=4e-3, warmup_epochs=5, epochs=90)),
    "in22k-to-1k-224": ("'Finetune 22K-pretrained RepLKNet-31B on ImageNet-1K (224x224)' (2 nodes x 8 GPUs)", dict(
        _MAIN_DEFAULTS, **_FT_FLAGS, drop_path_rate=0.2, batch_size=32, gpus=16)),
    "in22k-to-1k-384": ("'Finetune 22K-pretrained RepLKNet-31B on ImageNet-1K (384x384)' (4 nodes x 8 GPUs)", dict(
        _MAIN_DEFAULTS, **_FT_FLAGS, drop_path_rate=0.3, batch_size=16, gpus=32, min_lr=3e-4)),
}
"""Per recipe: (the README command it corresponds to, the values that command trains with)."""


def source(preset: str, field: str) -> str:
    """``paper``, ``official`` or ``assumed`` for a field of a preset; ``default`` for a field the preset
    does not set (the study schema's default)."""
    if field == "resolution" or field in PAPER_FIELDS[preset]:
        return "paper"
    if field not in PRESETS[preset]:
        return "default"
    if preset in OFFICIAL and field in OFFICIAL[preset][1]:
        return "official"
    return "assumed"


def official_value(preset: str, field: str) -> tuple[bool, Any]:
    """(whether the official command sets it, its value there)."""
    if preset not in OFFICIAL or field not in OFFICIAL[preset][1]:
        return False, None
    return True, OFFICIAL[preset][1][field]


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
