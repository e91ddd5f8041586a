"""The effective receptive field (Appendix B, Table 10) as /work/shared/erf-spec.md describes the
official code: the map by the chain rule, r by the strict centred-square search on the log-scaled
map, and the schema of `analyses:`. Fast: tiny nets, small maps (the end-to-end run is in
tests/test_analyze.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from ablate.analyses.erf import aggregate, area_ratios, contribution_maps, last_feature_map, log_scale, square_sums
from ablate.analyses.names import erf_metric
from ablate.cli import app
from ablate.study import StudyError, load_study
from conftest import write_study



class Features(nn.Module):
    """A model whose forward_features is ``body`` (the ERF reads forward_features)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_map_is_the_chain_rule_by_hand() -> None:
    # one 3x3 conv, 3 -> 2 channels, no bias, on a 5x5 image: the centre output (2, 2) of channel c is
    # sum_k,u,v W[c,k,u,v] x[k,1+u,1+v]; s = sum_c relu(y_c), so ds/dx[k,1+u,1+v] = sum_c [y_c > 0] W[c,k,u,v],
    # and the map is sum_k max(that, 0); zero outside the 3x3 window.
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
    w = torch.randn(2, 3, 3, 3, generator=g, dtype=torch.float64)
    conv.weight.data = w.clone().float()
    x = torch.randn(1, 3, 5, 5, generator=g)
    y = torch.einsum("ckuv,kuv->c", w, x[0, :, 1:4, 1:4].double())
    active = (y > 0).double()
    if active.sum() in (0, 2):  # make the ReLU gate matter: one channel on, one off
        w[1] *= -1 if active.sum() == 2 else 1
        conv.weight.data = w.clone().float()
        y = torch.einsum("ckuv,kuv->c", w, x[0, :, 1:4, 1:4].double())
        active = (y > 0).double()
    assert active.sum() == 1
    grad = torch.einsum("c,ckuv->kuv", active, w)  # d s / d x over the window
    expected = torch.zeros(5, 5, dtype=torch.float64)
    expected[1:4, 1:4] = grad.clamp(min=0).sum(0)  # negative parts removed before the sum over RGB
    got = contribution_maps(Features(conv).eval(), x)[0].double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # A averages the per-image maps over the images (here the same image twice, and a second one)
    x2 = torch.randn(1, 3, 5, 5, generator=g)
    m2 = contribution_maps(Features(conv).eval(), x2)[0].double()
    a, used, skipped = aggregate(Features(conv), [torch.cat([x, x2])])
    assert (used, skipped) == (2, 0)
    np.testing.assert_allclose(a, ((got + m2) / 2).numpy(), rtol=1e-5, atol=1e-7)


def test_nan_maps_are_skipped_and_not_counted() -> None:
    class SqrtConv(nn.Module):  # sqrt of a negative input: NaN forward, NaN input gradient
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
            nn.init.ones_(self.conv.weight)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(torch.sqrt(x))

    good, bad = torch.ones(1, 1, 5, 5), -torch.ones(1, 1, 5, 5)
    a, used, skipped = aggregate(Features(SqrtConv()), [torch.cat([good, bad]), good])
    assert (used, skipped) == (2, 1)
    expected = np.zeros((5, 5))
    expected[1:4, 1:4] = 0.5  # d sqrt(x)/dx = 1/2 at x = 1, each pixel of the 3x3 window once
    np.testing.assert_allclose(a, expected)


def test_r_on_the_spec_gaussian_with_and_without_log_scaling() -> None:
    # erf-spec.md, item 7: a Gaussian of amplitude 1e3 and sigma 60 px on 1024x1024 gives r(20%) = 1.74%
    # with the log scaling and 0.51% without
    yy, xx = np.mgrid[:1024, :1024]
    a = 1e3 * np.exp(-((yy - 512) ** 2 + (xx - 512) ** 2) / (2 * 60.0**2))
    assert round(100 * area_ratios(log_scale(a), [0.2])[0], 2) == 1.74
    assert round(100 * area_ratios(a / a.max(), [0.2])[0], 2) == 0.51


def test_square_search_is_strict_starts_at_side_3_and_uses_side_2i_plus_1() -> None:
    uniform = np.ones((6, 6))  # centre (3, 3); side 3 holds 9/36 = 25% exactly, side 5 holds 25/36
    assert square_sums(uniform).tolist() == [9.0, 25.0]
    assert area_ratios(uniform, [0.25]) == [25 / 36]  # "more than" t: 25% exactly is not enough
    assert area_ratios(uniform, [0.2499]) == [9 / 36]
    assert area_ratios(uniform, [0.7]) == [1.0]  # no square fits: the whole map (the official code fails)
    delta = np.zeros((9, 9))
    delta[4, 4] = 5.0  # all the mass in the centre pixel: side 1 is never tested, so side 3
    assert area_ratios(log_scale(delta), [0.2, 0.99]) == [9 / 81, 9 / 81]
    off = np.zeros((8, 8))
    off[4, 4] = 1.0  # even side: the centre is (H/2, W/2), the lower-right of the four central cells
    assert square_sums(off)[0] == 1.0
    with pytest.raises(ValueError, match="zero everywhere"):
        log_scale(np.zeros((8, 8)))


def test_metric_names() -> None:
    assert [erf_metric(t) for t in (0.2, 0.3, 0.5, 0.99, 0.995)] == ["erf_r20", "erf_r30", "erf_r50", "erf_r99",
                                                                    "erf_r99p5"]


def _box_stack(k: int, depth: int = 3) -> nn.Module:
    layers = []
    for _ in range(depth):
        conv = nn.Conv2d(3, 3, k, padding=k // 2, bias=False)
        nn.init.constant_(conv.weight, 1.0 / (3 * k * k))
        layers += [conv, nn.ReLU()]
    return Features(nn.Sequential(*layers))


def test_larger_kernel_gives_larger_r_on_the_same_images() -> None:
    images = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(1)) + 0.1
    r = {}
    for k in (3, 7):
        a, _, _ = aggregate(_box_stack(k), [images[:2], images[2:]])
        r[k] = area_ratios(log_scale(a), [0.2, 0.3, 0.5, 0.99])
    assert all(big > small for big, small in zip(r[7], r[3])), r


def test_replknet_map_is_taken_before_the_final_norm_and_default_forward_is_unchanged() -> None:
    import timm

    import ablate.models  # noqa: F401

    torch.manual_seed(0)
    m = timm.create_model("replknet_31b", layers=(1, 1, 1, 1), channels=(8, 8, 8, 8), kernel_sizes=(7, 5, 5, 3),
                          num_classes=3).eval()
    with torch.no_grad():
        m.norm.running_mean.fill_(0.5)  # a final norm that is not the identity
        x = torch.randn(2, 3, 64, 64)
        pre = m.stages(m.stem(x))
        assert torch.equal(m.forward_features(x), m.norm(pre))  # the default: as before
        assert torch.equal(m.forward_features(x, final_norm=False), pre)
        assert torch.equal(last_feature_map(m, x), pre)  # the ERF's choice (the official code)
        assert torch.equal(last_feature_map(m, x, final_norm=True), m.norm(pre))
        assert torch.equal(m(x), m.forward_head(m.norm(pre)))


def test_resnet101_feature_map_is_layer4() -> None:
    import timm

    m = timm.create_model("resnet101", pretrained=False, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.act1(m.bn1(m.conv1(x))))))))
        assert torch.equal(last_feature_map(m, x), ref)
    maps = contribution_maps(m, x)
    assert maps.shape == (1, 64, 64) and (maps >= 0).all() and maps.sum() > 0


# -- the schema --------------------------------------------------------------------------------------
BASE = """
name: s
model: {name: mobilenetv2_lk, kwargs: {width_mult: 0.1}}
axes: {grid: {model.kwargs.kernel_size: [3, 5]}}
dataset: {name: fashion_mnist, image_size: 16}
"""


def test_analyses_schema_defaults_are_the_papers(tmp_path: Path) -> None:
    s = load_study(write_study(tmp_path / "s.yaml", BASE + "analyses: {erf: {}}\n"))
    erf = s.analyses.erf
    assert (erf.images, erf.size, erf.split, erf.thresholds, erf.final_norm, erf.weights) == \
        (50, 1024, "val", [0.2, 0.3, 0.5, 0.99], False, "final")
    assert list(s.analyses.declared()) == ["erf"]


@pytest.mark.parametrize("section, field, expected", [
    ("{erf: {thresholds: [0.2, 1.5]}}", "analyses.erf.thresholds", "strictly between 0 and 1"),
    ("{erf: {images: 0}}", "analyses.erf.images", "greater than or equal to 1"),
    ("{erf: {rows: [{label: R, match: {}, paper: [1.0]}]}}", "analyses.erf", "one number per threshold"),
    ("{erf: {sise: 64}}", "analyses.erf.sise", "unknown key"),
    ("{erf: {weights: best}}", "analyses.erf.weights", "add it to artifacts.keep"),
    ("{kernels: {variants: [odd]}}", "analyses.kernels.variants.0", "large"),
    ("{shape_bias: {}}", "analyses.shape_bias.folder", "missing"),
])
def test_analyses_schema_errors_name_the_field(tmp_path: Path, section: str, field: str, expected: str) -> None:
    with pytest.raises(StudyError) as e:
        load_study(write_study(tmp_path / "s.yaml", BASE + f"analyses: {section}\n"))
    assert e.value.field == field and expected in e.value.expected, (e.value.field, e.value.expected)


def test_plan_refuses_a_missing_shape_bias_folder_and_unknown_rows(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-cue-conflict"
    f = write_study(tmp_path / "s.yaml", BASE + f"analyses: {{shape_bias: {{folder: '{missing}'}}}}\n")
    r = CliRunner().invoke(app, ["plan", str(f), "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert r.exit_code == 2 and "analyses.shape_bias.folder" in r.output and str(missing) in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "x.db").exists()
    f = write_study(tmp_path / "t.yaml", BASE + "analyses: {erf: {rows: [{label: R, match: {model.name: resnet101}}]}}\n")
    r = CliRunner().invoke(app, ["plan", str(f)])
    assert r.exit_code == 2 and "analyses.erf.rows[0].match" in r.output, r.output


def test_page_data_for_the_dashboard_and_table_from_stored_results(tmp_path: Path) -> None:
    """What a dashboard page gets (log-scaled, downsampled maps per arm, the r table) and Table 10's
    layout, from a database-shaped record and erf.npy files (no training needed)."""
    import json

    from ablate.analyses.page import erf_page, erf_page_json
    from ablate.analyses.tables import render_analysis
    from ablate.analyses.worker import save_array
    from ablate.artifacts import ArtifactStore
    from ablate.store import StudyRecord, TrialRecord

    files = ArtifactStore(str(tmp_path / "arts"))
    spec = {"analyses": {"erf": {"images": 50, "size": 256, "thresholds": [0.2, 0.99],
                                 "rows": [{"label": "Big <K>", "match": {"model.kwargs.k": 7}, "paper": [16.3, 98.6]}]}}}
    trials = []
    for i, (k, seed, r20) in enumerate([(3, 0, 1.0), (7, 0, 10.0), (7, 1, 12.0)]):
        t = TrialRecord(f"t{i}", {"model.kwargs.k": k, "seed": seed}, {"model": {"kwargs": {"k": k}}}, seed,
                        "completed", 1, 1, None, None, None,
                        final={"erf_r20": r20, "erf_r99": 90.0, "erf_images": 50.0, "erf_size": 256.0})
        trials.append(t)
        a = np.zeros((256, 256), np.float32)
        a[128 - k:128 + k, 128 - k:128 + k] = 100.0 * (seed + 1)
        save_array(files, files.path("s", t.trial_id, "erf.npy"), a)
    record = StudyRecord("s", "", spec, trials)
    page = erf_page(record, str(tmp_path / "arts"), max_side=64)
    assert [m.label for m in page["maps"]] == ["Big <K>", "k=3"]  # the declared rows first
    big = page["maps"][0]
    assert big.trial_ids == ["t1", "t2"] and big.size == 256 and big.image.shape == (64, 64)
    assert big.image.max() == pytest.approx(1.0) and big.image.min() == 0.0
    assert json.loads(erf_page_json(record, str(tmp_path / "arts"), 32))["maps"][1]["label"] == "k=3"
    md = render_analysis(record, "erf", "md")
    assert "| Model | t = 20% | t = 99% |" in md
    assert "| Big &lt;K> | 11.0% ± 1.4 (paper 16.3%) | 90.0% ± 0.0 (paper 98.6%) |" in md, md  # "<" escaped where it could open a tag
    assert "| k=3 | 1.0% | 90.0% |" in md, md
    assert "256x256" in md and "first 50 images" in md
    assert r"\toprule" in render_analysis(record, "erf", "latex")


# Table 10 of the paper (Appendix B), r in percent at t = 20 / 30 / 50 / 99%
TABLE_10 = {"ResNet-101": [0.9, 1.5, 3.2, 22.4], "ResNet-152": [1.1, 1.8, 3.9, 34.4],
            "RepLKNet-13": [11.2, 17.1, 30.2, 96.3], "RepLKNet-31": [16.3, 24.7, 43.2, 98.6]}


def test_erf_study_declares_table_10_and_a_tiny_demo() -> None:
    from ablate.expand import expand

    file = Path(__file__).resolve().parents[1] / "studies" / "erf.yaml"
    study = load_study(file, "paper")  # (planning at 224 measures four big models: slow; the demo plans below)
    erf = study.analyses.erf
    assert (erf.images, erf.size, erf.thresholds, erf.final_norm) == (50, 1024, [0.2, 0.3, 0.5, 0.99], False)
    assert {r.label: r.paper for r in erf.rows} == TABLE_10
    names = {r.label: r.match["model.name"] for r in erf.rows}
    assert names == {"ResNet-101": "resnet101", "ResNet-152": "resnet152", "RepLKNet-13": "replknet_13",
                     "RepLKNet-31": "replknet_31b"}
    assert {t.config["model"]["name"] for t in expand(study, file)} == set(names.values())
    assert study.recipe.epochs == 120  # Table 10's RepLKNets: the 120-epoch ImageNet-1K models
    demo = load_study(file, "demo")  # (tests/test_fuzz_study.py plans it)
    assert demo.dataset.name == "fashion_mnist" and demo.resources.gpus == 0 and demo.recipe.max_steps_per_epoch <= 20
    assert demo.analyses.erf.size <= 128 and demo.analyses.erf.images <= 8 and len(expand(demo, file)) == 4


def test_table_of_an_analysis_imports_neither_torch_nor_ray(tmp_path: Path) -> None:
    import subprocess
    import sys

    from ablate.store import Store, StudyRecord, TrialRecord

    url = f"sqlite:///{tmp_path / 'r.db'}"
    spec = {"analyses": {"erf": {"thresholds": [0.2, 0.5]}}}
    t = TrialRecord("t0", {"model.name": "resnet101", "seed": 0}, {"model": {"name": "resnet101"}}, 0, "completed",
                    1, 1, None, None, None, final={"erf_r20": 1.25, "erf_r50": 4.0})
    Store(url).import_records([StudyRecord("s", "", spec, [t])])
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom ablate.cli import app\n"
            f"r = CliRunner().invoke(app, ['table', 's', '--analysis', 'erf', '--db', {url!r}])\n"
            "print(r.exit_code, r.output)\nprint(sorted(m for m in ('torch', 'timm', 'ray') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.startswith("0 ") and "| name=\"resnet101\" | 1.2% | 4.0% |" in out, out
    assert out.strip().endswith("[]"), out
    r = CliRunner().invoke(app, ["table", "s", "--analysis", "kernels", "--db", url])
    assert r.exit_code == 2 and "--analysis: one of erf" in r.output


def test_store_takes_analysis_scalars_only_for_completed_trials_at_their_last_epoch(tmp_path: Path) -> None:
    from ablate.store import Store

    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.register("s", "", {}, [{"trial_id": t, "params": {}, "config": {}, "seed": 0, "n_params": 1, "flops": 1}
                                 for t in ("done", "busy")])
    for t in ("done", "busy"):
        store.start("s", t)
        for epoch in (0, 1):
            store.add_metrics("s", t, epoch, {"top1": 50.0 + epoch})
    store.finish("s", "done")
    assert store.add_analysis("s", "done", {"erf_r20": 12.5}) and not store.add_analysis("s", "busy", {"erf_r20": 1.0})
    assert store.add_analysis("s", "done", {"erf_r20": 13.0})  # recomputed: replaced, not duplicated
    by_id = {t.trial_id: t for t in store.load("s", history=True).trials}
    assert by_id["done"].history["erf_r20"] == [(1, 13.0)] and by_id["done"].final["top1"] == 51.0
    assert "erf_r20" not in by_id["busy"].final
