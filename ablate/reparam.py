"""Structural re-parameterization: a trained model's deploy form, and the gate that proves it equal.

``merge(model)`` returns a deep copy in eval mode in which

1. every re-param module (``LargeKernelDW``, ``ParallelSmallKernel``) is one conv: each branch's BN
   fused into its conv, a dilated kernel expanded to its sparse dense equivalent where a small kernel
   must be added onto it, each small kernel zero-padded to the large size and added (RepLKNet Sec. 3);
2. every BatchNorm that directly follows a conv (the conv's output feeding only that BN) is fused
   into it: W' = W * gamma / sigma, b' = beta + (b - mu) * gamma / sigma, with sigma = sqrt(var + eps);
3. every BatchNorm whose output feeds only a conv without padding (RepLKNet's pre-block BNs before
   1x1 convs) is folded into that conv: W' = W * a, b' = b + sum(W * c) with a = gamma / sigma,
   c = beta - mu * a -- exact because no zero padding sees the un-normalized input.

Which BN follows or precedes which conv is read from the ``torch.fx`` graph of the model, so the
fusion is right for any traceable model (timm's ResNets call ``bn1`` after ``conv1`` by attribute,
not in a Sequential); if a model cannot be traced, adjacent children of ``nn.Sequential`` are fused.
Anything else (LayerNorm, BN before a padded conv or a linear layer, convs called twice) is left as it is.

``check_equivalence`` compares the two on a batch; ``gate`` raises ``ReparamError`` past ``GATE_TOLERANCE``.
"""

from __future__ import annotations

import contextlib
import copy
from collections import Counter
from typing import Any, Iterator

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_leaves

from ablate.layers import LargeKernelDW, ParallelSmallKernel
from ablate.layers.conv_bn import bn_affine, fuse_conv_bn

GATE_TOLERANCE = 1e-4
"""Largest ``check_equivalence`` value (max abs difference / max abs output) the gate accepts."""

REPARAM_MODULES = (LargeKernelDW, ParallelSmallKernel)


class ReparamError(RuntimeError):
    """The merged (deploy) model does not compute what the trained one does."""

    def __init__(self, diff: float, tolerance: float = GATE_TOLERANCE, where: str = ""):
        self.diff, self.tolerance = diff, tolerance
        super().__init__(
            f"re-parameterization gate failed{where}: the merged model's output differs from the trained "
            f"model's by {diff:.3g} of the output scale (max |y - y_merged| / max |y|), above the tolerance "
            f"{tolerance:g}. The deploy form is not equivalent; its params/FLOPs would not describe this model.")


def _plain_bn(m: nn.Module) -> bool:
    # timm's BatchNormAct2d subclasses BatchNorm2d but also applies an activation: not a plain BN
    return (isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm)) and type(m).forward in
            (nn.BatchNorm2d.forward, nn.SyncBatchNorm.forward) and m.track_running_stats
            and m.running_mean is not None)


def _plain_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and type(m).forward is nn.Conv2d.forward


def has_mergeable(model: nn.Module) -> bool:
    """True when ``merge`` would change something: an unmerged re-param module or a BatchNorm to fuse."""
    return any((isinstance(m, REPARAM_MODULES) and m.merged is None) or _plain_bn(m) for m in model.modules())


# --- finding conv/BN pairs ---------------------------------------------------------------------------

def _traced_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], list[tuple[str, str]]] | None:
    """(conv -> BN pairs, BN -> conv pairs) from the fx graph; None if the model cannot be traced."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any tracing failure means: use the conservative fallback
        return None
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")

    def single(node: Any, pred) -> bool:  # a module called exactly once, of the wanted kind
        return (isinstance(node, fx.Node) and node.op == "call_module" and calls[node.target] == 1
                and pred(modules[node.target]))

    post, pre = [], []
    for node in graph.nodes:
        if not single(node, _plain_bn) or len(node.args) != 1 or node.kwargs:
            continue
        src = node.args[0]
        if single(src, _plain_conv) and len(src.users) == 1:
            post.append((src.target, node.target))
        elif len(node.users) == 1:
            user = next(iter(node.users))
            if (single(user, _plain_conv) and user.args and user.args[0] is node and len(user.args) == 1
                    and _no_padding(modules[user.target])):
                pre.append((node.target, user.target))
    return post, pre


def _sequential_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    post, pre = [], []
    for name, m in model.named_modules():
        if not isinstance(m, nn.Sequential):
            continue
        kids = list(m.named_children())
        for (na, a), (nb, b) in zip(kids, kids[1:]):
            pa, pb = f"{name}.{na}" if name else na, f"{name}.{nb}" if name else nb
            if _plain_conv(a) and _plain_bn(b):
                post.append((pa, pb))
            elif _plain_bn(a) and _plain_conv(b) and _no_padding(b):
                pre.append((pa, pb))
    used = {n for pair in post for n in pair}
    return post, [p for p in pre if p[0] not in used and p[1] not in used]


def _no_padding(conv: nn.Conv2d) -> bool:
    return conv.padding == "valid" or all(p == 0 for p in conv.padding)  # type: ignore[union-attr]


# --- fusing ------------------------------------------------------------------------------------------

def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _set_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> None:
    grad = conv.weight.requires_grad
    if weight is not conv.weight:
        conv.weight = nn.Parameter(weight.detach().clone(), requires_grad=grad)
    conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=grad)


def _shapes_only(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor] | None:
    """On the meta device (counting params/FLOPs) only shapes matter: skip the arithmetic."""
    if not conv.weight.is_meta:
        return None
    return conv.weight, conv.weight.new_empty(conv.out_channels)


@torch.no_grad()
def _fold_bn_before(bn: _BatchNorm, conv: nn.Conv2d) -> None:
    """conv(bn(x)) as one conv, for a conv without padding (so every tap sees a normalized input)."""
    gamma, beta = bn_affine(bn)
    a = gamma / (bn.running_var + bn.eps).sqrt()
    c = beta - bn.running_mean * a
    w = conv.weight
    out_chs, in_per_group = w.shape[:2]
    groups = conv.groups
    # input channel seen by weight[o, i]: group of o times in_per_group, plus i
    idx = (torch.arange(out_chs, device=w.device) // (out_chs // groups))[:, None] * in_per_group \
        + torch.arange(in_per_group, device=w.device)[None, :]
    a_full, c_full = a[idx][..., None, None], c[idx][..., None, None]
    bias = conv.bias if conv.bias is not None else w.new_zeros(out_chs)
    _set_conv(conv, w * a_full, bias + (w * c_full).sum(dim=(1, 2, 3)))


def fuse_batchnorms(model: nn.Module) -> int:
    """Fuse, in place, every BN that directly follows a conv, or directly precedes a conv without
    padding, into that conv (the BN becomes ``nn.Identity``). Returns how many BNs were fused."""
    pairs = _traced_pairs(model)
    post, pre = pairs if pairs is not None else _sequential_pairs(model)
    modules = dict(model.named_modules())
    for conv_name, bn_name in post:
        conv, bn = modules[conv_name], modules[bn_name]
        _set_conv(conv, *_shapes_only(conv) or fuse_conv_bn(conv, bn))
        _set(model, bn_name, nn.Identity())
    for bn_name, conv_name in pre:
        conv = modules[conv_name]
        if (shapes := _shapes_only(conv)) is not None:
            _set_conv(conv, *shapes)
        else:
            _fold_bn_before(modules[bn_name], conv)
        _set(model, bn_name, nn.Identity())
    return len(post) + len(pre)


@torch.no_grad()
def merge(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The deploy form of ``model``: a deep copy in eval mode with every re-param branch and every
    fusable BatchNorm merged into a single conv. The argument is left untouched unless ``inplace``."""
    deployed = (model if inplace else copy.deepcopy(model)).eval()
    for m in list(deployed.modules()):
        if isinstance(m, REPARAM_MODULES) and m.merged is None:
            m.merge()
    fuse_batchnorms(deployed)
    return deployed


# --- the gate ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """Plain IEEE fp32 convs and matmuls for the comparison: TF32 (on by default for cuDNN convs on
    recent GPUs) alone differs by ~1e-3 and would fail the gate for reasons unrelated to the merge."""
    backends = [b for b in (getattr(torch.backends.cudnn, "conv", None), getattr(torch.backends.cuda, "matmul", None))
                if b is not None and hasattr(b, "fp32_precision")]
    if backends:
        saved = [b.fp32_precision for b in backends]
        try:
            for b in backends:
                b.fp32_precision = "ieee"
            yield
        finally:
            for b, s in zip(backends, saved):
                b.fp32_precision = s
        return
    saved_flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_flags


@torch.no_grad()
def check_equivalence(model: nn.Module, merged: nn.Module, x: torch.Tensor) -> float:
    """max |model(x) - merged(x)| / max |model(x)|, both in eval mode (``model``'s mode is restored)."""
    was_training = model.training
    model.eval()
    merged.eval()
    try:
        with full_fp32():
            ref, out = tree_leaves(model(x)), tree_leaves(merged(x))
    finally:
        model.train(was_training)
    diff = max(float((r.float() - o.float()).abs().max()) for r, o in zip(ref, out))
    scale = max(float(r.float().abs().max()) for r in ref)
    return diff / max(scale, torch.finfo(torch.float32).tiny)


def gate(model: nn.Module, x: torch.Tensor, merged: nn.Module | None = None,
         tolerance: float = GATE_TOLERANCE) -> tuple[nn.Module, float]:
    """Merge (unless given the merged model) and check on ``x``; (merged, diff) or ``ReparamError``."""
    merged = merge(model) if merged is None else merged
    diff = check_equivalence(model, merged, x)
    if not diff <= tolerance:  # NaN fails too
        raise ReparamError(diff, tolerance)
    return merged, diff
