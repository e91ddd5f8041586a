"""Kernel-weight maps (Appendix F, Fig. 6): planted weights come out as planted, the right conv is picked."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

import ablate.models  # noqa: F401 - registers ablate's models
from ablate.analyses import get
from ablate.analyses.kernels import (KernelAnalysisError, aggregate, analyze, figure6, find_kernel, kernel_maps,
                                     stages, summarise)
from ablate.reparam import merge
from ablate.study import KernelsOptions

K = 13


def _tiny(small: int | None) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("mobilenetv2_lk", kernel_size=K, small_kernel=small, width_mult=0.25, num_classes=4)


def _plant(dw, large: np.ndarray, small: np.ndarray | None, gamma: float = 2.0) -> None:
    """Weights per channel = the planted pattern times (channel + 1); BN: scale gamma / sigma = gamma, shift 0."""
    with torch.no_grad():
        for branch, pattern in ((dw.lk, large), (dw.small, small)):
            if branch is None:
                continue
            c = branch.conv.weight.shape[0]
            mult = torch.arange(1, c + 1, dtype=torch.float32).reshape(-1, 1, 1, 1)
            branch.conv.weight.copy_(torch.as_tensor(pattern, dtype=torch.float32) * mult)
            branch.bn.running_var.fill_(1.0 - branch.bn.eps)
            branch.bn.running_mean.fill_(0.5)
            branch.bn.weight.fill_(gamma)
            branch.bn.bias.fill_(0.0)


def _patterns() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:K, :K]
    c = K // 2
    large = 1.0 / (1.0 + np.hypot(yy - c, xx - c))      # decays from the centre
    large[c, :] += 0.5                                   # a strong skeleton
    large[:, c] += 0.5
    large *= np.where((yy + xx) % 2 == 0, 1.0, -1.0)     # signs must not cancel: |w| is summed
    small = np.full((3, 3), 3.0)
    return large, small


def test_the_first_stride1_kernel_of_the_last_stage_is_picked() -> None:
    model = _tiny(3)
    pick = find_kernel(model)
    # MobileNetV2 stages have 1, 2, 3, 4, 3, 3, 1 blocks: blocks 13-15 are the stage entered at 14x14, whose first
    # block (13) has stride 2; the convs that see 7x7 (at 224) are blocks 14, 15, 16; the first is the paper's
    assert pick.name == "blocks.14.dw" and pick.input_size == (7, 7)
    # stages by input resolution: 112, 56, 28, 14, 7 (the 14x14 one: blocks 7-13, block 6 having stride 2)
    groups = stages(model)
    assert [size[0] for size, _ in groups] == [112, 56, 28, 14, 7]
    assert [n for n, _, s in groups[-2][1] if s == 1][0] == "blocks.7.dw"
    assert [n for n, _, s in groups[-1][1]] == ["blocks.14.dw", "blocks.15.dw", "blocks.16.dw"]
    with pytest.raises(KernelAnalysisError, match="analyses.kernels.index"):
        find_kernel(model, index=3)
    with pytest.raises(KernelAnalysisError, match="analyses.kernels.stage"):
        find_kernel(model, stage=5)


def test_planted_kernels_come_out_as_planted() -> None:
    large, small = _patterns()
    model = _tiny(3)
    _plant(model.blocks[14].dw, large, small)
    pick, got_large, got_merged, has_small = kernel_maps(model)
    c = model.blocks[14].dw.lk.conv.weight.shape[0]
    channels = c * (c + 1) / 2                            # sum of the planted channel multipliers
    # BN fusion multiplies by gamma / sigma = 2 on both branches; the merged adds the 3x3 onto the centre
    want_large = np.abs(large) * 2 * channels
    want_merged = np.abs(large * 2 + np.pad(small * 2, 5)) * channels
    np.testing.assert_allclose(got_large, want_large / want_large.max(), rtol=1e-5)
    np.testing.assert_allclose(got_merged, want_merged / want_merged.max(), rtol=1e-5)
    assert has_small and got_large.max() == 1.0 and got_large.min() >= 0
    # the shares by hand: central 3x3 and centre row + column, of the |w| map
    s = summarise(got_large)
    a = np.abs(large)
    assert s["kernel_center3_share"] == pytest.approx(a[5:8, 5:8].sum() / a.sum())
    assert s["kernel_skeleton_share"] == pytest.approx((a[6].sum() + a[:, 6].sum() - a[6, 6]) / a.sum())
    assert s["kernel_center_value"] == pytest.approx(1.0) and s["kernel_distance_corr"] < -0.5
    # re-param enhances the central 3x3: the paper's observation, as a number
    assert summarise(got_merged)["kernel_center3_share"] > s["kernel_center3_share"]


def test_analyze_result_and_deployed_model() -> None:
    large, small = _patterns()
    model = _tiny(3)
    _plant(model.blocks[14].dw, large, small)
    res = analyze(model, None, KernelsOptions())
    registered = get("kernels")
    assert set(res.arrays) == set(registered.arrays(KernelsOptions())) == {"kernel_large.npy", "kernel_merged.npy"}
    assert set(registered.scalars(KernelsOptions())) <= set(res.scalars)
    assert res.arrays["kernel_large.npy"].shape == (K, K)
    assert res.scalars["kernel_has_small"] == 1.0
    assert res.scalars["kernel_center3_share_merged"] > res.scalars["kernel_center3_share"]
    # the deployed (merged) model has only the merged kernel: both maps are it, equal to the trained one's merged
    deployed = analyze(merge(model), None, KernelsOptions())
    np.testing.assert_allclose(deployed.arrays["kernel_large.npy"], res.arrays["kernel_merged.npy"], rtol=1e-5, atol=1e-6)
    assert deployed.scalars["kernel_has_small"] == 0.0
    # without re-param the merged map is the large one
    plain = _tiny(None)
    _plant(plain.blocks[14].dw, large, None)
    out = analyze(plain, None, KernelsOptions(variants=["large"]))
    assert set(out.arrays) == {"kernel_large.npy"} and "kernel_center3_share_merged" not in out.scalars
    np.testing.assert_allclose(out.arrays["kernel_large.npy"], aggregate(np.abs(large)[None, None]), rtol=1e-5)
    _, plain_large, plain_merged, _ = kernel_maps(plain)
    np.testing.assert_array_equal(plain_large, plain_merged)
    fig = figure6(out.arrays["kernel_large.npy"], res.arrays["kernel_large.npy"], res.arrays["kernel_merged.npy"])
    heatmaps = [t for t in fig["data"] if t["type"] == "heatmap"]
    assert len(heatmaps) == 3 and np.asarray(heatmaps[2]["z"]).shape == (K, K)
    assert np.allclose(np.asarray(heatmaps[2]["z"]), res.arrays["kernel_merged.npy"])
