"""Small composable layers shared by ablate's models (timm style)."""

from ablate.layers.conv_bn import ConvBN, conv_bn_act, fuse_conv_bn
from ablate.layers.large_kernel import LargeKernelDW, ParallelSmallKernel, centered_sum, dilate_kernel

__all__ = ["ConvBN", "conv_bn_act", "fuse_conv_bn", "LargeKernelDW", "ParallelSmallKernel", "centered_sum",
           "dilate_kernel"]
