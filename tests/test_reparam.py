"""Structural re-parameterization (RepLKNet Sec. 3 Guideline 3, Appendix F): the merged deploy model
computes what the trained one does, to within the gate (1e-4 of the output scale).

Property tests (hypothesis) over kernel / dilation / small kernel / channels / stride / odd input
sizes prove the merge of each re-param module and of the BN fusions; then the gate runs on every
family of the zoo at tiny widths, and in the trainer.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ablate.layers import LargeKernelDW, ParallelSmallKernel, centered_sum, dilate_kernel
from ablate.models import build_model
from ablate.reparam import (GATE_TOLERANCE, ReparamError, check_equivalence, fuse_batchnorms, gate,
                            has_mergeable, merge)

PROPERTY = settings(max_examples=25, deadline=None, derandomize=True)



def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters (fresh BNs are identities in eval mode), so
    a wrong fusion formula cannot pass by accident; eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.3)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.3)
        elif isinstance(m, ParallelSmallKernel):  # timm inits it at std 0.02: make the branch matter
            m.small.weight.data.copy_(torch.randn(m.small.weight.shape, generator=g) * 0.3)
    return model.eval()


def n_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


# --- kernels --------------------------------------------------------------------------------------------

def test_dilate_and_centered_sum():
    k = torch.arange(9.0).reshape(1, 1, 3, 3)
    d = dilate_kernel(k, 2)
    assert d.shape[-2:] == (5, 5) and d[0, 0, ::2, ::2].equal(k[0, 0]) and d[0, 0, 1::2].abs().sum() == 0
    s = centered_sum((torch.zeros(1, 1, 5, 5), 1), (torch.ones(1, 1, 1, 1), 1))
    assert s[0, 0, 2, 2] == 1 and s.sum() == 1


@st.composite
def lk_cases(draw):
    k = draw(st.sampled_from([1, 3, 5, 7, 9, 13]))
    d = draw(st.integers(1, 3)) if k > 1 else 1
    eff = d * (k - 1) + 1
    small = draw(st.one_of(st.none(), st.sampled_from([s for s in (1, 3, 5) if s <= eff])))
    return dict(channels=draw(st.integers(1, 6)), kernel_size=k, dilation=d, small_kernel=small,
                stride=draw(st.sampled_from([1, 2])), size=draw(st.integers(3, 17)), batch=draw(st.integers(1, 2)),
                seed=draw(st.integers(0, 2**16)))


@PROPERTY
@given(lk_cases())
def test_large_kernel_dw_merge_is_exact(case):
    size, batch, seed = case.pop("size"), case.pop("batch"), case.pop("seed")
    torch.manual_seed(seed)
    m = randomize(LargeKernelDW(**case), seed)
    x = torch.randn(batch, case["channels"], size, size)
    merged, diff = gate(m, x)
    assert diff <= GATE_TOLERANCE
    conv = merged.merged
    assert isinstance(conv, nn.Conv2d) and merged.small is None and not hasattr(merged, "lk")
    # a dilated kernel stays dilated unless a small kernel had to be added onto it
    if case["small_kernel"] is None:
        assert conv.dilation == (case["dilation"],) * 2 and conv.kernel_size == (case["kernel_size"],) * 2
    else:
        assert conv.dilation == (1, 1) and conv.kernel_size == ((case["kernel_size"] - 1) * case["dilation"] + 1,) * 2
    assert merged(x).shape == m(x).shape


@PROPERTY
@given(k=st.sampled_from([3, 5, 7, 11]), d=st.integers(1, 2), small=st.sampled_from([1, 3, 5]),
       chs=st.integers(1, 5), depthwise=st.booleans(), bias=st.booleans(), stride=st.sampled_from([1, 2]),
       size=st.integers(3, 15), seed=st.integers(0, 2**16))
def test_parallel_small_kernel_merge_is_exact(k, d, small, chs, depthwise, bias, stride, size, seed):
    torch.manual_seed(seed)
    eff = d * (k - 1) + 1
    small = min(small, eff if eff % 2 else eff - 1)
    lk = nn.Conv2d(chs, chs, k, stride, d * (k - 1) // 2, dilation=d, groups=chs if depthwise else 1, bias=bias)
    m = randomize(ParallelSmallKernel(lk, small), seed)
    x = torch.randn(2, chs, size, size)
    merged, diff = gate(m, x)
    assert diff <= GATE_TOLERANCE and isinstance(merged.merged, nn.Conv2d)


def test_parallel_small_kernel_rejects_what_it_cannot_merge():
    with pytest.raises(ValueError, match="larger"):
        ParallelSmallKernel(nn.Conv2d(2, 2, 3, padding=1, groups=2), 5)
    with pytest.raises(ValueError, match="same"):
        ParallelSmallKernel(nn.Conv2d(2, 2, 7, padding=0, groups=2), 3)


class AttributeNet(nn.Module):
    """timm-ResNet style (convs and BNs called by attribute, not in a Sequential), plus the cases the
    fusion must leave alone: a BN before a padded conv, a BN whose output is also used elsewhere,
    and a conv called twice."""

    def __init__(self, chs: int, groups: int, stride: int, k: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, chs, k, stride, k // 2, bias=False), nn.BatchNorm2d(chs)
        self.pre_bn, self.pw = nn.BatchNorm2d(chs), nn.Conv2d(chs, chs * 2, 1, groups=groups, bias=True)
        self.bn2 = nn.BatchNorm2d(chs * 2)
        self.keep_bn, self.padded = nn.BatchNorm2d(chs * 2), nn.Conv2d(chs * 2, chs, 3, padding=1)
        self.shared_bn, self.twice = nn.BatchNorm2d(chs), nn.Conv2d(chs, chs, 1)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.bn2(self.pw(self.pre_bn(x)))
        x = self.padded(self.keep_bn(x))           # BN before a padded conv: not exact to fold
        y = self.shared_bn(x)
        x = x + y + self.twice(self.twice(y))      # BN output used twice; conv called twice
        return x


@PROPERTY
@given(chs=st.sampled_from([2, 4, 6]), groups=st.sampled_from([1, 2]), stride=st.sampled_from([1, 2]),
       k=st.sampled_from([1, 3, 5]), size=st.integers(4, 13), seed=st.integers(0, 2**16))
def test_bn_fusion_follows_the_graph(chs, groups, stride, k, size, seed):
    torch.manual_seed(seed)
    m = randomize(AttributeNet(chs, groups, stride, k), seed)
    merged, diff = gate(m, torch.randn(2, 3, size, size))
    assert diff <= GATE_TOLERANCE
    assert isinstance(merged.bn1, nn.Identity) and isinstance(merged.bn2, nn.Identity)
    assert isinstance(merged.pre_bn, nn.Identity)  # folded into the following 1x1 (grouped) conv
    assert isinstance(merged.keep_bn, nn.BatchNorm2d) and isinstance(merged.shared_bn, nn.BatchNorm2d)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))

    def forward(self, x):
        if x.sum() > -1e9:  # data-dependent control flow: torch.fx cannot trace it
            return self.body(x)
        return x


def test_untraceable_model_falls_back_to_sequential_neighbours():
    m = randomize(Untraceable())
    merged, diff = gate(m, torch.randn(2, 3, 9, 9))
    assert n_bn(merged) == 0 and diff <= GATE_TOLERANCE


def test_merge_leaves_the_model_untouched_and_is_idempotent():
    m = randomize(build_model({"name": "mobilenetv2_lk", "kwargs": {"width_mult": 0.1, "kernel_size": 5,
                                                                      "small_kernel": 3}}, 10, 1)).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    merged = merge(m)
    assert m.training and not merged.training and m.blocks[0].dw.small is not None
    after = m.state_dict()
    assert all(v.equal(after[k]) for k, v in before.items())
    assert has_mergeable(m) and not has_mergeable(merged)
    again = merge(merged)
    x = torch.randn(2, 1, 16, 16)
    assert again(x).equal(merged(x))


def test_gate_catches_a_wrong_merge():
    m = randomize(LargeKernelDW(4, 7, small_kernel=3), 1)
    bad = merge(m)
    with torch.no_grad():  # the 3x3 added one pixel off centre
        w = bad.merged.weight
        bn = m.small.bn
        sw = m.small.conv.weight * (bn.weight / (bn.running_var + bn.eps).sqrt())[:, None, None, None]
        w[..., 2:5, 2:5] -= sw
        w[..., 1:4, 2:5] += sw
    x = torch.randn(2, 4, 12, 12)
    assert check_equivalence(m, bad, x) > GATE_TOLERANCE
    with pytest.raises(ReparamError, match=r"differs .* by [0-9.e-]+ of the output scale.*tolerance 0.0001"):
        gate(m, x, merged=bad)


def test_fuse_batchnorms_counts():
    m = randomize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)))
    assert fuse_batchnorms(m) == 2 and n_bn(m) == 0


# --- the gate on every family --------------------------------------------------------------------------

FAMILIES = {
    "mobilenetv2_lk-per-stage-reparam3": ("mobilenetv2_lk", {"width_mult": 0.1, "small_kernel": 3,
                                                             "kernel_size": [3, 5, 7, 9, 11, 13, 15]}),
    "mobilenetv2_lk-dilated-reparam-noshortcut": ("mobilenetv2_lk", {"width_mult": 0.1, "kernel_size": 3,
                                                                     "dilation": 3, "small_kernel": 3,
                                                                     "shortcut": False}),
    "replknet_31b": ("replknet_31b", {"channels": [8, 16, 24, 32], "layers": [1, 1, 2, 1]}),
    "replknet_31l-3-3-3-3": ("replknet_31l", {"channels": [8, 16, 24, 32], "layers": [1, 1, 1, 1],
                                               "kernel_sizes": [3, 3, 3, 3]}),
    "replknet_xl": ("replknet_xl", {"channels": [8, 16, 24, 32], "layers": [1, 1, 2, 1]}),
    "convnext_lk_tiny-31-reparam5": ("convnext_lk_tiny", {"dims": [8, 16, 24, 32], "depths": [1, 1, 2, 1],
                                                          "kernel_sizes": [31, 29, 27, 13], "small_kernel": 5,
                                                          "ls_init_value": 1.0}),
    "convnext_lk_base": ("convnext_lk_base", {"dims": [8, 16, 24, 32], "depths": [1, 1, 2, 1], "small_kernel": 3,
                                              "ls_init_value": 1.0}),
    # timm's ResNet class (Bottleneck blocks, BNs called by attribute) as resnet101/152 use it, at 26 layers
    "timm-resnet": ("resnet26", {}),
}


@pytest.mark.parametrize("name,kwargs", FAMILIES.values(), ids=FAMILIES.keys())
def test_gate_on_every_family(name, kwargs):
    torch.manual_seed(0)
    m = randomize(build_model({"name": name, "kwargs": kwargs}, 10, 3))
    merged, diff = gate(m, torch.randn(2, 3, 32, 32))
    assert diff <= GATE_TOLERANCE
    assert not any(isinstance(x, (LargeKernelDW, ParallelSmallKernel)) and x.merged is None for x in merged.modules())
    # every BN is gone but RepLKNet's last one (BN -> pool -> linear is left as it is)
    assert n_bn(merged) == (1 if name.startswith("replknet") else 0)


# --- in the trainer ------------------------------------------------------------------------------------

def _config(root, **kwargs):
    return {"model": {"name": "mobilenetv2_lk", "kwargs": {"width_mult": 0.1, "kernel_size": 5, **kwargs}},
            "recipe": {"epochs": 2, "batch_size": 8, "max_steps_per_epoch": 1, "opt": "sgd", "lr": 0.05,
                       "momentum": 0.9, "weight_decay": 0.0, "sched": "cosine", "warmup_epochs": 0,
                       "warmup_lr": 1e-6, "min_lr": 0.0, "channels_last": True},
            "dataset": {"name": "folder", "root": str(root), "image_size": 16}, "seed": 0}


def test_trainer_reports_the_gate_with_the_last_epoch(image_folder):
    from ablate.trainer import train

    reports = []
    final = train(_config(image_folder, small_kernel=3), report=reports.append, device="cpu")
    assert len(reports) == 2 and "reparam_max_abs_diff" not in reports[0]
    assert reports[-1] is final or reports[-1] == final
    assert 0 <= final["reparam_max_abs_diff"] <= GATE_TOLERANCE


def test_trainer_fails_the_trial_when_the_gate_fails(image_folder, monkeypatch):
    import ablate.reparam
    from ablate.trainer import train

    real_merge = ablate.reparam.merge

    def broken_merge(model, inplace=False):
        merged = real_merge(model, inplace)
        with torch.no_grad():
            next(x for x in merged.modules() if isinstance(x, LargeKernelDW)).merged.weight.mul_(3.0)
        return merged

    monkeypatch.setattr(ablate.reparam, "merge", broken_merge)
    reports = []
    with pytest.raises(ReparamError, match="re-parameterization gate failed"):
        train(_config(image_folder, small_kernel=3), report=reports.append, device="cpu")
    assert len(reports) == 1  # the failing epoch is not reported as a success
