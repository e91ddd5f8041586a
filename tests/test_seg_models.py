"""Backbones as feature pyramids and UperNet on them: Table 11's ADE20K Params / FLOPs (Appendix D).

Table 11 prints, for UperNet at 2048x512 with 150 classes: ConvNeXt-T 60M / 939G, ConvNeXt-S 82M /
1027G, ConvNeXt-B 122M / 1170G, ConvNeXt-T 31-29-27-13 64M / 973G, ConvNeXt-S 31-29-27-13 90M / 1081G.
Counted on the meta device (no memory, no arithmetic); what is counted: ``ablate.seg_zoo``.
"""

from __future__ import annotations

import pytest
import timm
import torch

import ablate.models  # noqa: F401  (registers)
from ablate.models.upernet import UperNet
from ablate.seg_zoo import SEG_ZOO, measure_upernet
from ablate.zoo import as_printed


TINY_REPLK = dict(layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), kernel_sizes=(7, 5, 5, 3), small_kernel=3)
TINY_CONVNEXT = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), kernel_sizes=(7, 5, 3, 3))


@pytest.mark.parametrize("name,kwargs", [("replknet_31b", TINY_REPLK), ("convnext_lk_tiny", TINY_CONVNEXT)])
def test_features_only_gives_the_four_stage_outputs(name, kwargs):
    torch.manual_seed(0)
    net = timm.create_model(name, **kwargs).eval()
    feats = timm.create_model(name, features_only=True, **kwargs).eval()
    assert feats.feature_info.channels() == [8, 16, 32, 64] and feats.feature_info.reduction() == [4, 8, 16, 32]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        if name.startswith("replknet"):  # the official out_indices mode: each stage's blocks, before the transition
            ref, y = [], net.stem(x)
            for stage in net.stages:
                y = stage.blocks(y)
                ref.append(y)
                y = stage.transition(y)
            # the classifier weights load into the pyramid as they are (under model.), head and norm left out
            unused = feats.load_state_dict({f"model.{k}": v for k, v in net.state_dict().items()}, strict=False)
            assert not unused.missing_keys and {k.split(".")[1] for k in unused.unexpected_keys} == {"norm", "head"}
        else:
            _, ref = net.forward_intermediates(x)
            # timm's FeatureListNet flattens top-level Sequentials: stages.0 -> stages_0, stem.0 -> stem_0
            state = {k.replace(".", "_", 1) if k.startswith(("stages.", "stem.")) else k: v
                     for k, v in net.state_dict().items()}
            unused = feats.load_state_dict(state, strict=False)
            assert not unused.missing_keys and {k.split(".")[0] for k in unused.unexpected_keys} == {"head"}
        outs = feats(x)
    assert [tuple(o.shape) for o in outs] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)]
    assert all(torch.equal(o, r) for o, r in zip(outs, ref))


def test_out_indices_and_no_pyramid():
    with torch.device("meta"):
        two = timm.create_model("replknet_31b", features_only=True, out_indices=(1, 2), **TINY_REPLK)
    assert two.feature_info.channels() == [16, 32]
    assert [o.shape[1] for o in two(torch.zeros(1, 3, 64, 64, device="meta"))] == [16, 32]
    assert not hasattr(two.model, "head") or isinstance(two.model.head, torch.nn.Identity)
    with pytest.raises(ValueError, match="no feature pyramid"):
        timm.create_model("mobilenetv2_lk", features_only=True)


def test_upernet_outputs_and_backbone_loading():
    torch.manual_seed(0)
    seg = UperNet("replknet_31b", num_classes=5, backbone_kwargs=TINY_REPLK, channels=16, aux_channels=8)
    x = torch.randn(2, 3, 64, 48)
    out, aux = seg.train()(x)  # training: main and auxiliary logits, at the input size
    assert out.shape == aux.shape == (2, 5, 64, 48)
    assert seg.eval()(x).shape == (2, 5, 64, 48)  # inference: the auxiliary head does not run
    net = timm.create_model("replknet_31b", **TINY_REPLK)
    assert seg.load_backbone(net.state_dict())[:2] == ["head.bias", "head.weight"]
    assert torch.equal(seg.backbone.model.stem[0].conv.weight, net.stem[0].conv.weight)
    with pytest.raises(ValueError, match="lack"):
        seg.load_backbone({k: v for k, v in net.state_dict().items() if not k.startswith("stem.0")})
    # ConvNeXt's segmentation backbone normalizes each output (official norm0-norm3); RepLKNet-31B does not
    cnx = UperNet("convnext_lk_tiny", 5, TINY_CONVNEXT, channels=16, aux_channels=8)
    assert [type(n).__name__ for n in cnx.feature_norms] == ["LayerNorm2d"] * 4
    assert [type(n).__name__ for n in seg.feature_norms] == ["Identity"] * 4


@pytest.mark.parametrize("entry", SEG_ZOO, ids=[f"Table11-ADE20K-{e.label.replace(' ', '-')}" for e in SEG_ZOO])
def test_table11_ade20k_params_and_flops(entry):
    """Params with the auxiliary head; FLOPs of inference at 2048x512 in mmcv's convention (ablate.seg_zoo)."""
    c = measure_upernet({"name": entry.model, "kwargs": entry.kwargs})
    assert as_printed(c.params, entry.paper_params), f"params {c.params:,} vs printed {entry.paper_params}"
    assert as_printed(c.flops, entry.paper_flops), f"FLOPs {c.flops:,} vs printed {entry.paper_flops}"
    assert not as_printed(c.params_no_aux, entry.paper_params)  # the auxiliary head is in the printed count
    assert 0 < c.flops - c.macs < 0.3e9  # mmcv's extras (biases, ReLUs, pooling) on top of the multiply-adds


def test_table11_plain_macs_are_reported_not_fudged():
    """Multiply-adds alone: ConvNeXt-T 938.49G and -B 1169.34G would print 1G under Table 11's 939G / 1170G;
    the other three agree either way."""
    macs = {e.label: measure_upernet({"name": e.model, "kwargs": e.kwargs}).macs for e in SEG_ZOO}
    assert macs["ConvNeXt-T 7-7-7-7"] == 938_485_481_472
    assert macs["ConvNeXt-B 7-7-7-7"] == 1_169_344_692_224
    assert [as_printed(macs[e.label], e.paper_flops) for e in SEG_ZOO] == [False, True, False, True, True]
