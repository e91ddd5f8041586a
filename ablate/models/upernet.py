"""UperNet (Xiao et al. 2018) on any backbone with a timm feature pyramid, as RepLKNet Table 11 uses it.

The setup the paper follows (Swin / ConvNeXt / RepLKNet mmsegmentation configs, ``upernet_*``):

* backbone: the classifier's stages, their four outputs (strides 4, 8, 16, 32) through timm's
  ``features_only`` (``FeatureGetterNet``: parameter names are the classifier's under ``backbone.model.``,
  so an ImageNet trial's weights load as they are, see ``load_backbone``). ConvNeXt's segmentation
  backbone puts a LayerNorm on each output (``norm0``-``norm3`` in the official code); RepLKNet-XL's
  puts a BN (``norm_intermediate_features``); RepLKNet-31B/L none: ``feature_norm="auto"`` picks so.
* decode head (UPerHead): a pyramid pooling module (adaptive average pools (1, 2, 3, 6), each a 1x1
  conv-BN-ReLU to ``channels``) on the stride-32 output, a 3x3 bottleneck over it and the pools; 1x1
  laterals on the others, a top-down path (bilinear upsampling, sums), 3x3 FPN convs, all four levels
  upsampled to stride 4 and fused by a 3x3 conv (4 x ``channels`` -> ``channels``); dropout 0.1 and a
  1x1 classifier (with bias). Convs before a BN have no bias. ``channels`` = 512.
* auxiliary FCN head on the stride-16 output: one 3x3 conv-BN-ReLU to 256, dropout 0.1, 1x1 classifier;
  its loss weighs 0.4 in training and it is not run at inference.

SyncBN in the configs is BatchNorm2d here (``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` for DDP).
``forward`` returns logits upsampled to the input size (bilinear, align_corners=False); in training
mode with an auxiliary head it returns ``(logits, aux_logits)``.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

FeatureNorm = Literal["auto", "layernorm", "batchnorm", "none"]


def conv_bn_relu(in_chs: int, out_chs: int, kernel_size: int) -> nn.Sequential:
    """mmseg's ConvModule with a norm: conv without bias, BN, ReLU."""
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True))


def _up(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """PSPNet's pooling branches: each pools to ``scale`` x ``scale``, projects, and upsamples back."""

    def __init__(self, in_chs: int, channels: int, scales: Sequence[int]):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s), conv_bn_relu(in_chs, channels, 1))
                                      for s in scales)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [_up(b(x), x.shape[2:]) for b in self.branches]


class UperHead(nn.Module):
    """PPM on the last level + FPN over all levels, fused at the first level's resolution."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 512,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1):
        super().__init__()
        *lower, top = in_channels
        self.ppm = PyramidPooling(top, channels, pool_scales)
        self.bottleneck = conv_bn_relu(top + len(pool_scales) * channels, channels, 3)
        self.laterals = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in lower)
        self.fpn_convs = nn.ModuleList(conv_bn_relu(channels, channels, 3) for _ in lower)
        self.fpn_bottleneck = conv_bn_relu(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        *lower, top = features
        levels = [lat(f) for lat, f in zip(self.laterals, lower)]
        levels.append(self.bottleneck(torch.cat([top, *self.ppm(top)], dim=1)))
        for i in range(len(levels) - 1, 0, -1):  # top-down: each level gets the coarser one added
            levels[i - 1] = levels[i - 1] + _up(levels[i], levels[i - 1].shape[2:])
        outs = [conv(lvl) for conv, lvl in zip(self.fpn_convs, levels)] + [levels[-1]]
        size = outs[0].shape[2:]
        fused = self.fpn_bottleneck(torch.cat([outs[0]] + [_up(o, size) for o in outs[1:]], dim=1))
        return self.classifier(self.dropout(fused))


class FCNHead(nn.Module):
    """The auxiliary head: ``num_convs`` 3x3 conv-BN-ReLU, dropout, 1x1 classifier."""

    def __init__(self, in_chs: int, num_classes: int, channels: int = 256, num_convs: int = 1, dropout: float = 0.1):
        super().__init__()
        self.convs = nn.Sequential(*(conv_bn_relu(in_chs if i == 0 else channels, channels, 3)
                                     for i in range(num_convs)))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.convs(x)))


def _auto_norm(backbone: str) -> str:
    if backbone.startswith("convnext"):
        return "layernorm"  # official ConvNeXt segmentation backbone: norm0-norm3 (LayerNorm, eps 1e-6)
    if backbone == "replknet_xl":
        return "batchnorm"  # official RepLKNet-XL downstream: norm_intermediate_features=True
    return "none"


def _norm(kind: str, chs: int) -> nn.Module:
    return {"layernorm": lambda: LayerNorm2d(chs, eps=1e-6), "batchnorm": lambda: nn.BatchNorm2d(chs),
            "none": nn.Identity}[kind]()


class UperNet(nn.Module):
    """A backbone from timm's registry (any with ``features_only``) + UperHead + auxiliary FCNHead.

    backbone / backbone_kwargs: the classifier's registry name and kwargs (a study's ``model``).
    aux_index: which pyramid level feeds the auxiliary head (2: stride 16); None for no auxiliary head.
    """

    def __init__(self, backbone: str, num_classes: int = 150, backbone_kwargs: dict[str, Any] | None = None,
                 in_chans: int = 3, drop_path_rate: float = 0.0, channels: int = 512,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), aux_channels: int = 256, aux_index: int | None = 2,
                 dropout: float = 0.1, feature_norm: FeatureNorm = "auto"):
        import timm

        super().__init__()
        kwargs = dict(backbone_kwargs or {})
        # a weights file for the backbone (a classifier's checkpoint): loaded below through load_backbone,
        # as init_from's weights are, since timm's feature wrapper names every tensor differently
        pretrained = bool(kwargs.pop("pretrained", False))
        weights = (kwargs.pop("pretrained_cfg_overlay", None) or {}).get("file")
        if pretrained and not weights:
            raise ValueError(f"{backbone}: pretrained: true needs a local checkpoint: "
                             "pretrained_cfg_overlay: {file: PATH}")
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        self.backbone = timm.create_model(backbone, features_only=True, out_indices=(0, 1, 2, 3),
                                          feature_cls="getter", in_chans=in_chans, **kwargs)
        chs = self.backbone.feature_info.channels()
        norm = _auto_norm(backbone) if feature_norm == "auto" else feature_norm
        self.feature_norms = nn.ModuleList(_norm(norm, c) for c in chs)
        self.num_classes = num_classes
        self.decode_head = UperHead(chs, num_classes, channels, pool_scales, dropout)
        self.aux_index = aux_index
        self.aux_head = FCNHead(chs[aux_index], num_classes, aux_channels, 1, dropout) if aux_index is not None else None
        if pretrained:
            self.load_backbone_file(weights)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [n(f) for n, f in zip(self.feature_norms, self.backbone(x))]

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        logits = _up(self.decode_head(feats), x.shape[2:])
        if self.training and self.aux_head is not None:
            return logits, _up(self.aux_head(feats[self.aux_index]), x.shape[2:])
        return logits

    def load_backbone_file(self, path: str) -> list[str]:
        """The backbone from a classifier's weights file (``model.kwargs: {pretrained: true,
        pretrained_cfg_overlay: {file: PATH}}``; ``$VARS`` and ``~`` expand; an official checkpoint is
        mapped by its model's ``checkpoint_filter_fn``, as ``ablate.weights.load_weights`` does)."""
        import os

        from ablate.weights import WeightsError, filter_fn_for, read_checkpoint

        path = os.path.expandvars(os.path.expanduser(path))
        state = read_checkpoint(path)
        inner = getattr(self.backbone, "model", self.backbone)
        fn = filter_fn_for(inner)
        try:
            if fn is not None:
                state = fn(state, inner)
            return self.load_backbone(state)
        except ValueError as e:
            raise WeightsError(f"{path}: {e}") from None

    def load_backbone(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Load a classifier's weights (an ImageNet trial's ``final``) into the backbone; returns the
        classifier-only names left out (head, final norm). Every backbone tensor must be there."""
        own = self.backbone.state_dict()
        mapped = {f"model.{k}": v for k, v in state.items()}
        missing = [k for k in own if k not in mapped]
        if missing:
            raise ValueError(f"the weights lack {len(missing)} backbone tensors, e.g. {missing[0].removeprefix('model.')}")
        wrong = [k for k in own if mapped[k].shape != own[k].shape]
        if wrong:
            raise ValueError(f"backbone tensor {wrong[0].removeprefix('model.')} has shape "
                             f"{tuple(mapped[wrong[0]].shape)} in the weights, {tuple(own[wrong[0]].shape)} here")
        if not any(p.is_meta for p in self.backbone.parameters()):  # on the meta device (plan): shapes only
            self.backbone.load_state_dict({k: mapped[k] for k in own})
        return sorted(k.removeprefix("model.") for k in mapped if k not in own)
