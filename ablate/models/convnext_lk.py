"""ConvNeXt with per-stage depthwise kernel sizes (RepLKNet Appendix D, Table 11).

timm's own ``ConvNeXt`` (it takes ``kernel_sizes``), plus an optional parallel small kernel on each
block's depthwise conv for structural re-parameterization (``small_kernel``). ConvNeXt's ``conv_dw`` has
a bias and no BN after it, so the branch is a plain small depthwise conv without bias or norm
(``ParallelSmallKernel``): its merge is an exact kernel sum and it adds no BN the architecture lacks.
Appendix D replaces the 7x7 kernels only ("simply replace"), so ``small_kernel`` defaults to None.
"""

from __future__ import annotations

from typing import Any, Sequence

from timm.layers import trunc_normal_
from timm.models.convnext import ConvNeXt, ConvNeXtBlock

from ablate.layers import ParallelSmallKernel
from ablate.models._registry import ablate_model


class ConvNeXtLK(ConvNeXt):
    """timm's ConvNeXt; kernel_sizes: one int or four (one per stage); small_kernel: size of a parallel
    re-param kernel on every depthwise conv at least that large (None: none)."""

    def __init__(self, kernel_sizes: int | Sequence[int] = 7, small_kernel: int | None = None, **kwargs: Any):
        kernels = [kernel_sizes] * 4 if isinstance(kernel_sizes, int) else list(kernel_sizes)
        if len(kernels) != 4 or any(k % 2 == 0 for k in kernels):
            raise ValueError(f"kernel_sizes needs one odd int or four (one per stage), got {kernel_sizes}")
        super().__init__(kernel_sizes=tuple(kernels), **kwargs)
        self.small_kernel = small_kernel
        if small_kernel is None:
            return
        for block in self.modules():
            if isinstance(block, ConvNeXtBlock) and small_kernel <= min(block.conv_dw.kernel_size):
                block.conv_dw = ParallelSmallKernel(block.conv_dw, small_kernel)
                trunc_normal_(block.conv_dw.small.weight, std=0.02)  # timm's ConvNeXt init for convs


# timm's own feature config for ConvNeXt: ``features_only=True`` gives the four stage outputs (strides 4-32)
FEATURES = dict(out_indices=(0, 1, 2, 3), flatten_sequential=True)

# ConvNeXt-T/S/B (Liu et al. 2022), as timm's convnext_tiny / _small / _base
ablate_model(ConvNeXtLK, "convnext_lk_tiny", FEATURES, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))
ablate_model(ConvNeXtLK, "convnext_lk_small", FEATURES, depths=(3, 3, 27, 3), dims=(96, 192, 384, 768))
ablate_model(ConvNeXtLK, "convnext_lk_base", FEATURES, depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024))
