"""Params and FLOPs as the paper counts them: FLOPs are multiply-adds (MACs) of one image.

``torch.utils.flop_counter`` counts 2 FLOPs per multiply-add, so we halve its total. It counts
convolutions and matmuls (not BN, activations or adds), which is the paper's convention.

Segmentation FLOPs (Table 11's ADE20K columns, "following Swin") were counted by mmsegmentation's
``tools/get_flops.py``, i.e. mmcv's ``get_model_complexity_info``, which adds a little to the MACs:
``count_macs_and_mmcv_flops`` reproduces its convention with the same torch counter.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: `human` serves commands that must not load it
    from torch import nn

from ablate.text import human  # noqa: F401  (formatting lives with text; kept here for callers)


def flops_input(config: dict[str, Any]) -> str | None:
    """The input a trial's FLOPs are counted at, as a header says it: '224' (a square image) or, for a
    segmentation trial, '2048x512' (width x height: 4s x s for crop s, Table 11's ADE20K scale)."""
    size = (config.get("dataset") or {}).get("image_size")
    if size is None:
        return None
    if (config.get("model") or {}).get("task") == "segmentation":
        return f"{4 * int(size)}x{int(size)}"
    return str(size)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _input_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    return (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))


def _count(model: nn.Module, image_size: int | tuple[int, int], in_chans: int,
           custom_mapping: dict[Any, Any] | None = None, copy_model: bool = True) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    meta = (copy.deepcopy(model) if copy_model else model).to("meta").eval()
    x = torch.zeros(1, in_chans, *_input_hw(image_size), device="meta")
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=custom_mapping) as counter:
        meta(x)
    return counter.get_total_flops()


def count_macs(model: nn.Module, image_size: int | tuple[int, int], in_chans: int = 3) -> int:
    """Multiply-adds of one forward pass on one ``in_chans x image_size x image_size`` image
    (``image_size`` may be ``(height, width)``).

    Runs on a copy on the meta device: shapes only, no arithmetic, so RepLKNet at 224 costs
    milliseconds and the caller's model is untouched."""
    return _count(model, image_size, in_chans) // 2


# mmcv's flops_counter (mmcv/cnn/utils/flops_counter.py, 1.x) hooks modules by exact type and counts:
# Conv2d: MACs + out_channels x output positions when it has a bias; Linear: MACs (no bias); nn.ReLU:
# output elements; pooling (incl. adaptive): input elements; nn.BatchNorm2d / nn.LayerNorm: input
# elements (x2 if affine). Not counted: SyncBatchNorm (not in its table, and the mmseg configs use
# SyncBN), custom LayerNorm classes (ConvNeXt's), GELU, functional ops (interpolate, adds, layer scale).
def _numel(shape: Any) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


class _MmcvExtras:
    """torch flop formulas that leave the counter's total at 2 x MACs and tally mmcv's extras aside."""

    def __init__(self) -> None:
        self.extra = 0

    def conv(self, x_shape, w_shape, bias, stride, padding, dilation, transposed, *args, out_shape=None, **kwargs):
        from torch.utils.flop_counter import conv_flop_count

        if bias is not None:
            self.extra += _numel(out_shape)
        return conv_flop_count(x_shape, w_shape, out_shape, transposed=transposed)

    def outputs(self, *args, out_shape=None, **kwargs) -> int:
        self.extra += _numel(out_shape)
        return 0

    def inputs(self, x_shape, *args, out_shape=None, **kwargs) -> int:
        self.extra += _numel(x_shape)
        return 0

    def mapping(self) -> dict[Any, Any]:
        """aten ops -> mmcv's per-module formulas, for models whose ReLUs are ``nn.ReLU`` modules, whose
        BNs were SyncBN when mmcv counted them and whose norms are not ``nn.LayerNorm`` (UperNet on
        ConvNeXt / RepLKNet, as the mmseg configs build them)."""
        import torch

        aten = torch.ops.aten
        return {aten.convolution: self.conv, aten.relu: self.outputs, aten.relu_: self.outputs,
                aten._adaptive_avg_pool2d: self.inputs, aten.avg_pool2d: self.inputs,
                aten.max_pool2d_with_indices: self.inputs}


def count_macs_and_mmcv_flops(model: nn.Module, image_size: int | tuple[int, int], in_chans: int = 3,
                              copy_model: bool = True) -> tuple[int, int]:
    """(multiply-adds, what mmseg's ``tools/get_flops.py`` prints as "Flops") of one image, in one pass.

    mmcv's ``get_model_complexity_info`` counts multiply-adds plus conv biases, ReLU outputs and pooled
    inputs (see above). ``copy_model=False`` counts a model already on the meta device in place."""
    extras = _MmcvExtras()
    total = _count(model, image_size, in_chans, extras.mapping(), copy_model)
    return total // 2, total // 2 + extras.extra

