"""RepLKNet (Ding et al., "Scaling Up Your Kernels to 31x31", CVPR 2022, Sec. 4 and Appendix A).

Written from the paper and the official code (DingXiaoH/RepLKNet-pytorch, ``replknet.py``), reusing
ablate's layers and timm's. The architecture, layer by layer:

* stem: 3x3 conv s2 -> 3x3 depthwise -> 1x1 conv -> 3x3 depthwise s2 (each conv + BN + ReLU), at C[0];
* four stages of ``layers[i]`` (RepLK Block, ConvFFN) pairs at C[i]:
  - RepLK Block: x + DropPath(1x1 conv(BN(ReLU(DW large kernel(ReLU(BN(1x1 conv(BN(x)))))))),
    the depthwise conv being ``LargeKernelDW`` (KxK + BN, plus a parallel small kernel + BN that
    ``merge()`` folds into it), at ``int(C * dw_ratio)`` channels (1.5 for the inverted bottleneck of XL);
  - ConvFFN: x + DropPath(BN(1x1 conv(GELU(BN(1x1 conv(BN(x))))))), hidden width ``C * ffn_ratio``;
* transitions between stages: 1x1 conv C[i] -> C[i+1] + BN + ReLU, then 3x3 depthwise s2 + BN + ReLU;
* head: BN -> global average pool -> linear.

Stochastic depth grows linearly from 0 to ``drop_path_rate`` over the blocks (both members of a pair
share the rate), as in the official code.

Deliberate differences from the official code:

* BatchNorm2d everywhere (the official one defaults to SyncBatchNorm); convert with
  ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` for multi-GPU training.
* A stage whose kernel is smaller than ``small_kernel`` gets no re-param branch (the official code
  asserts instead), so ``kernel_sizes=[3, 3, 3, 3]`` builds RepLKNet-3 with the default small kernel 5.
* Gradient checkpointing is off by default and set with timm's ``set_grad_checkpointing()``.
* The deploy form (``ablate.reparam.merge``) also fuses every conv's BN and folds the pre-block BNs
  into the following 1x1 convs (exact, since those convs have no padding); the official
  ``structural_reparam`` only merges the large/small kernel pairs.
* Feature pyramid through timm: ``timm.create_model("replknet_31b", features_only=True)`` (or with
  ``out_indices``) returns each stage's output *before* its transition, as the official
  ``out_indices`` mode does (``forward_intermediates``, wrapped by timm's ``FeatureGetterNet``). The
  official ``norm_intermediate_features`` (an extra BN per output, RepLKNet-XL downstream only) is
  not in the backbone: ``ablate.models.upernet`` adds per-output norms where a setup uses them.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from timm.layers import DropPath, calculate_drop_path_rates
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq
from torch import nn

from ablate.layers import ConvBN, LargeKernelDW, conv_bn_act
from ablate.models._registry import ablate_model


def _relu_conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return conv_bn_act(in_chs, out_chs, kernel_size, stride, groups, act=nn.ReLU)


class RepLKBlock(nn.Module):
    def __init__(self, channels: int, dw_channels: int, kernel_size: int, small_kernel: int | None,
                 drop_path: float = 0.0):
        super().__init__()
        self.pre_bn = nn.BatchNorm2d(channels)
        self.pw1 = _relu_conv(channels, dw_channels, 1)
        self.large_kernel = LargeKernelDW(dw_channels, kernel_size, small_kernel=small_kernel)
        self.lk_act = nn.ReLU(inplace=True)
        self.pw2 = ConvBN(dw_channels, channels, 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw2(self.lk_act(self.large_kernel(self.pw1(self.pre_bn(x)))))
        return x + self.drop_path(out)


class ConvFFN(nn.Module):
    def __init__(self, channels: int, hidden: int, drop_path: float = 0.0):
        super().__init__()
        self.pre_bn = nn.BatchNorm2d(channels)
        self.pw1 = ConvBN(channels, hidden, 1)
        self.act = nn.GELU()
        self.pw2 = ConvBN(hidden, channels, 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.pw2(self.act(self.pw1(self.pre_bn(x)))))


class RepLKStage(nn.Module):
    """``depth`` (RepLK Block, ConvFFN) pairs, then the transition to the next stage (if any)."""

    def __init__(self, channels: int, depth: int, kernel_size: int, small_kernel: int | None,
                 drop_paths: Sequence[float], dw_ratio: float, ffn_ratio: float, out_channels: int | None):
        super().__init__()
        if small_kernel is not None and small_kernel > kernel_size:
            small_kernel = None  # a 5x5 cannot be re-parameterized into a 3x3: this stage has none
        blocks: list[nn.Module] = []
        for dp in drop_paths:
            blocks.append(RepLKBlock(channels, int(channels * dw_ratio), kernel_size, small_kernel, dp))
            blocks.append(ConvFFN(channels, int(channels * ffn_ratio), dp))
        self.blocks = nn.Sequential(*blocks)
        self.grad_checkpointing = False
        if out_channels is None:
            self.transition: nn.Module = nn.Identity()
        else:
            self.transition = nn.Sequential(_relu_conv(channels, out_channels, 1),
                                            _relu_conv(out_channels, out_channels, 3, 2, groups=out_channels))
        assert len(drop_paths) == depth

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's output at its own resolution and width (what a feature pyramid takes)."""
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transition(self.forward_blocks(x))


LR_DECAY_GROUPS = ("official", "stage")
"""How ``layer_decay`` groups the parameters: ``official`` as the official fine-tuning code
(optim_factory.py, ``get_num_layer_for_replknet``: 12 groups of blocks for [2, 2, 18, 2], with which the
README's ``--layer_decay 0.7`` commands run); ``stage`` as Appendix A's "stage-wise learning rate decay"
of RepLKNet-XL (stem, each stage, head)."""


class RepLKNet(nn.Module):
    """RepLKNet: a pure CNN with re-parameterized depthwise kernels up to 31x31.

    layers / channels / kernel_sizes: per stage (four). small_kernel: the parallel re-param kernel
    (None: none, as RepLKNet-XL). dw_ratio: width of the RepLK Block's depthwise conv relative to the
    stage (1.5: XL's inverted bottleneck). ffn_ratio: ConvFFN hidden width. lr_decay_groups: how layer_decay groups
    parameters (see ``LR_DECAY_GROUPS``).
    """

    def __init__(self, layers: Sequence[int] = (2, 2, 18, 2), channels: Sequence[int] = (128, 256, 512, 1024),
                 kernel_sizes: int | Sequence[int] = (31, 29, 27, 13), small_kernel: int | None = 5,
                 dw_ratio: float = 1.0, ffn_ratio: float = 4.0, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, lr_decay_groups: str = "official"):
        super().__init__()
        if lr_decay_groups not in LR_DECAY_GROUPS:
            raise ValueError(f"lr_decay_groups must be one of {', '.join(LR_DECAY_GROUPS)}, got {lr_decay_groups!r}")
        self.lr_decay_groups = lr_decay_groups
        layers, channels = list(layers), list(channels)
        kernels = [kernel_sizes] * len(layers) if isinstance(kernel_sizes, int) else list(kernel_sizes)
        if not len(layers) == len(channels) == len(kernels):
            raise ValueError(f"layers, channels and kernel_sizes need one value per stage, got "
                             f"{len(layers)}, {len(channels)} and {len(kernels)}")
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f"kernel_sizes must be odd, got {kernels}")
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.layers = layers
        self.kernel_sizes, self.small_kernel = kernels, small_kernel
        c0 = channels[0]
        self.stem = nn.Sequential(
            _relu_conv(in_chans, c0, 3, 2),
            _relu_conv(c0, c0, 3, groups=c0),
            _relu_conv(c0, c0, 1),
            _relu_conv(c0, c0, 3, 2, groups=c0),
        )
        dpr = calculate_drop_path_rates(drop_path_rate, sum(layers))
        stages, start = [], 0
        for i, (depth, chs, k) in enumerate(zip(layers, channels, kernels)):
            out = channels[i + 1] if i + 1 < len(layers) else None
            stages.append(RepLKStage(chs, depth, k, small_kernel, dpr[start:start + depth], dw_ratio, ffn_ratio, out))
            start += depth
        self.stages = nn.Sequential(*stages)
        # stem stride 4, then each transition halves: stage i's blocks run at stride 4 * 2**i
        self.feature_info = [dict(num_chs=c, reduction=4 * 2 ** i, module=f"stages.{i}.blocks")
                             for i, c in enumerate(channels)]
        self.num_features = self.head_hidden_size = channels[-1]
        self.norm = nn.BatchNorm2d(channels[-1])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(channels[-1], num_classes) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any] | Callable[[str], tuple[float]]:
        """timm's parameter grouping, which ``layer_decay`` (``create_optimizer_v2``) reads with
        ``coarse=False``: by stage when coarse or ``lr_decay_groups="stage"``; otherwise the official
        grouping (see ``LR_DECAY_GROUPS``). Head and final norm come last, in the top group."""
        if coarse or self.lr_decay_groups == "stage":
            return dict(stem=r"^stem", blocks=r"^stages\.(\d+)")
        return self._official_group

    def _official_group(self, name: str) -> tuple[float]:
        # official optim_factory.get_num_layer_for_replknet, for any depth: stem 0; then every 4 blocks
        # (2 RepLK Block + ConvFFN pairs) of a stage one group, a stage's transition in its last group;
        # head and norm last. For B = [2, 2, 18, 2]: stem 0, stages 1, 2, 3..11, 12, head 13.
        if name.startswith("stem"):
            return (0.0,)
        m = re.match(r"^stages\.(\d+)\.(?:blocks\.(\d+)|transition)", name)
        if m is None:
            return (math.inf,)
        stage = int(m.group(1))
        per_stage = [math.ceil(2 * d / 4) for d in self.layers]
        within = int(m.group(2)) // 4 if m.group(2) is not None else per_stage[stage] - 1
        return (float(1 + sum(per_stage[:stage]) + within),)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for s in self.stages:
            s.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_intermediates(
            self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None, norm: bool = False,
            stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """timm's intermediate-feature API: stage outputs before their transitions (the official
        ``out_indices`` mode). ``norm`` applies the head's BN to the last stage's output."""
        if output_fmt != "NCHW":
            raise ValueError(f"RepLKNet features are NCHW, got output_fmt={output_fmt!r}")
        take, max_index = feature_take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        intermediates = []
        x = self.stem(x)
        stages = self.stages if not stop_early else self.stages[:max_index + 1]
        for i, stage in enumerate(stages):
            x = stage.forward_blocks(x)
            if i in take:
                intermediates.append(self.norm(x) if norm and i == last else x)
            if intermediates_only and i == max_index:
                return intermediates
            x = stage.transition(x)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop what the kept stage outputs do not need (later stages, the last transition, head)."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        if prune_norm or max_index < len(self.stages) - 1:
            self.norm = nn.Identity()
        self.stages = self.stages[:max_index + 1]
        self.stages[-1].transition = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take

    def forward_features(self, x: torch.Tensor, final_norm: bool = True) -> torch.Tensor:
        """The last feature map; ``final_norm=False`` skips the final BN (stage 4's output, the map
        the official code measures the effective receptive field on: ``ablate.analyses.erf``)."""
        x = self.stages(self.stem(x))
        return self.norm(x) if final_norm else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.pool(x).flatten(1))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --- official checkpoints -----------------------------------------------------------------------------
# The official replknet.py names modules differently and registers them in another order (its RepLK
# Block: pw1, pw2, large_kernel, prelkb_bn; ablate's: pre_bn, pw1, large_kernel, pw2), so its state
# dicts are mapped by name, never by position: (official pattern, ablate replacement), applied in turn.
OFFICIAL_KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"^transitions\.(\d+)\.", r"stages.\1.transition."),     # official: one ModuleList of transitions
    (r"\.prelkb_bn\.", ".pre_bn."),                           # RepLK Block's pre-BN
    (r"\.preffn_bn\.", ".pre_bn."),                           # ConvFFN's pre-BN
    (r"\.large_kernel\.lkb_origin\.", ".large_kernel.lk."),    # the large kernel + BN
    (r"\.large_kernel\.small_conv\.", ".large_kernel.small."), # the parallel small kernel + BN
    (r"\.large_kernel\.lkb_reparam\.", ".large_kernel.merged."),  # a structurally re-parameterized checkpoint
)
_OFFICIAL_MARKERS = ("transitions.", ".prelkb_bn.", ".preffn_bn.", ".lkb_origin.", ".small_conv.", ".lkb_reparam.")


def official_to_ablate(key: str) -> str:
    """An official RepLKNet state-dict key as ablate's RepLKNet names it (stem, norm, head: unchanged)."""
    for pattern, repl in OFFICIAL_KEY_RULES:
        key = re.sub(pattern, repl, key)
    return key


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's hook for foreign checkpoints: an official RepLKNet state dict renamed to ablate's names
    (ablate's own pass unchanged). A checkpoint after the official ``structural_reparam()`` merges the
    model's re-param modules first, so it has the ``merged`` convs to receive the kernels."""
    if not any(m in k for k in state_dict for m in _OFFICIAL_MARKERS):
        return state_dict
    if any(re.match(r"^stages\.\d+\.norm\.", k) for k in state_dict):
        raise ValueError("an official checkpoint with norm_intermediate_features (a downstream XL backbone); "
                         "ablate's RepLKNet is the classification model")
    if any(".lkb_reparam." in k for k in state_dict):
        for m in model.modules():
            if isinstance(m, LargeKernelDW):
                m.merge()
    return {official_to_ablate(k): v for k, v in state_dict.items()}


# Sec. 4.2 / Appendix A: B = [2, 2, 18, 2], K = [31, 29, 27, 13], 5x5 re-param, FFN ratio 4
# timm's feature config: ``features_only=True`` wraps the model in FeatureGetterNet (forward_intermediates)
FEATURES = dict(out_indices=(0, 1, 2, 3), feature_cls="getter")

ablate_model(RepLKNet, "replknet_31b", FEATURES, channels=(128, 256, 512, 1024))
ablate_model(RepLKNet, "replknet_31l", FEATURES, channels=(192, 384, 768, 1536))
# Sec. 4.2 / Appendix B (Table 10): RepLKNet-31B's architecture with 13x13 kernels in every stage
ablate_model(RepLKNet, "replknet_13", FEATURES, channels=(128, 256, 512, 1024), kernel_sizes=(13, 13, 13, 13))
# Appendix A, "RepLKNet-XL": C = [256, 512, 1024, 2048], K = [27, 27, 27, 13], inverted bottleneck 1.5,
# no structural re-parameterization
ablate_model(RepLKNet, "replknet_xl", FEATURES, channels=(256, 512, 1024, 2048), kernel_sizes=(27, 27, 27, 13),
             small_kernel=None, dw_ratio=1.5, lr_decay_groups="stage")
