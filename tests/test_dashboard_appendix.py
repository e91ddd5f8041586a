"""The dashboard's appendix analyses (ablate/dashboard/appendix.py) from a real SQLite database and
artifact folder, as ``ablate analyze`` leaves them (no training: the paper's study files expanded,
their trials completed through the Store API, scalars stored with ``add_analysis``, arrays saved
with the analyses' own ``save_array``): Figure 1 (ERF maps side by side) and Table 10 with the
paper's numbers, Figure 6 (kernel maps) with its summary numbers, Figure 5 (shape bias). And one
headless Chromium rendering that page without a console error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from _browser import Chromium, pixel_stddev
from ablate.analyses.imagenet16 import CATEGORIES
from ablate.analyses.worker import save_array
from ablate.artifacts import ArtifactStore
from ablate.store import Store

ROOT = Path(__file__).resolve().parent.parent
T = [0.2, 0.3, 0.5, 0.99]
TABLE10 = {  # RepLKNet Table 10 (Appendix B), r in percent at t = 20/30/50/99%, as studies/erf.yaml gives it
    "ResNet-101": [0.9, 1.5, 3.2, 22.4], "ResNet-152": [1.1, 1.8, 3.9, 34.4],
    "RepLKNet-13": [11.2, 17.1, 30.2, 96.3], "RepLKNet-31": [16.3, 24.7, 43.2, 98.6]}
LABELS = {"resnet101": "ResNet-101", "resnet152": "ResNet-152", "replknet_13": "RepLKNet-13",
          "replknet_31b": "RepLKNet-31"}
SIDE = 256  # S of the synthetic erf.npy (the page draws at most 128x128)


def register(store: Store, study_file: Path, arms: list[dict], extra_seed: bool = False):
    """The study file's ``arms`` (axis values; as ``ablate plan`` expands them, without importing the
    models) registered and completed with one epoch of top1, as ``ablate run`` leaves them;
    ``extra_seed``: the last arm also with seed 1 (so means over seeds show)."""
    import copy

    from ablate.expand import set_path

    spec = yaml.safe_load(study_file.read_text())  # the file as written (load_study would import timm: seconds)
    trials = []
    for i, arm in enumerate(arms):
        for seed in (0, 1) if extra_seed and i == len(arms) - 1 else (0,):
            config = {"model": copy.deepcopy(spec["model"]), "seed": seed}
            for k, v in arm.items():
                set_path(config, k, v)
            trials.append({"trial_id": f"{spec['name']}-{i}-s{seed}", "params": {**arm, "seed": seed}, "config": config,
                           "seed": seed})
    name = spec["name"]
    store.register(name, spec["description"], spec, trials)
    for t in trials:
        store.start(name, t["trial_id"])
        store.add_metrics(name, t["trial_id"], 0, {"top1": 70.0 + len(t["trial_id"]) % 5})
        store.finish(name, t["trial_id"])
    return name, trials


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(database URL, artifact folder): studies/erf.yaml with ERF maps, r and shape bias for every arm
    (but ResNet-152, not analysed yet), studies/reparam.yaml with kernel maps."""
    d = tmp_path_factory.mktemp("appendix")
    url, arts = f"sqlite:///{d / 'r.db'}", d / "arts"
    files, store = ArtifactStore(str(arts)), Store(url)
    name, trials = register(store, ROOT / "studies" / "erf.yaml", [{"model.name": m} for m in LABELS],
                           extra_seed=True)
    yy, xx = np.mgrid[:SIDE, :SIDE] - SIDE // 2
    for i, t in enumerate(trials):
        model = t["config"]["model"]["name"]
        if model == "resnet152":
            continue
        width = {"resnet101": 4, "replknet_13": 30, "replknet_31b": 60}[model]
        a = np.exp(-(xx ** 2 + yy ** 2) / (2 * width ** 2)).astype(np.float32) * 1000 * (1 + t["seed"])
        save_array(files, files.path(name, t["trial_id"], "erf.npy"), a)
        r = [p + 0.5 * t["seed"] for p in TABLE10[LABELS[model]]]  # the paper's numbers (+0.5 for seed 1)
        scalars = {f"erf_r{round(th * 100)}": v for th, v in zip(T, r)} | {"erf_images": 50.0, "erf_size": float(SIDE)}
        bias = {"resnet101": 0.2, "replknet_13": 0.5, "replknet_31b": 0.6}[model]
        scalars |= {"shape_bias": bias, "shape_bias_category_mean": bias, "shape_bias_images": 1120.0,
                    **{f"shape_bias_{c}": min(1.0, bias + 0.02 * k) for k, c in enumerate(CATEGORIES)}}
        assert store.add_analysis(name, t["trial_id"], scalars)
    name, trials = register(store, ROOT / "studies" / "reparam.yaml",
                           [{"model.kwargs.kernel_size": k, "model.kwargs.small_kernel": sk} for k in (9, 13)
                            for sk in (None, 3)])
    for t in trials:
        small = t["params"]["model.kwargs.small_kernel"] is not None
        k = t["params"]["model.kwargs.kernel_size"]
        large = np.full((k, k), 0.2, np.float32)
        large[k // 2, :] = large[:, k // 2] = 0.6  # the skeleton
        large[k // 2, k // 2] = 1.0
        merged = large.copy()
        if small:
            merged[k // 2 - 1:k // 2 + 2, k // 2 - 1:k // 2 + 2] += 1.0
            merged /= merged.max()
        for variant, m in (("large", large), ("merged", merged)):
            save_array(files, files.path(name, t["trial_id"], f"kernel_{variant}.npy"), m)
        scalars = {"kernel_has_small": float(small), "kernel_center3_share": 0.1 + 0.1 * small,
                   "kernel_skeleton_share": 0.3, "kernel_center_value": 1.0, "kernel_distance_corr": -0.5,
                   "kernel_center3_share_merged": 0.15 + 0.2 * small, "kernel_skeleton_share_merged": 0.35,
                   "kernel_center_value_merged": 1.0, "kernel_distance_corr_merged": -0.6}
        assert store.add_analysis(name, t["trial_id"], scalars)
    store.close()
    return url, arts


def blobs_of(page: str) -> dict[str, dict]:
    return {m.group(1): json.loads(m.group(2)) for m in
            re.finditer(r'<script type="application/json" id="study-([^"]+)">(.*?)</script>', page, re.S)}


def test_page_shows_figure1_table10_figure6_and_figure5(analysed: tuple[str, Path], tmp_path: Path) -> None:
    from ablate.dashboard import write_report

    url, arts = analysed
    store = Store(url, create=False)
    page = write_report(store, tmp_path / "report.html", artifacts=arts).read_text()
    store.close()
    assert len(page) < 6_000_000
    blobs = blobs_of(page)
    erf, rep = blobs["erf"], blobs["reparam"]

    # Figure 1: one panel per analysed arm, side by side, on one colour scale; the maps are Â in [0, 1]
    fig = erf["figs"]["erf_maps"]
    panels = fig["data"]
    assert [p["name"] for p in panels] == ["ResNet-101", "RepLKNet-13", "RepLKNet-31"]  # Table 10's order
    assert {(p["zmin"], p["zmax"]) for p in panels} == {(0, 1)} and [p["showscale"] for p in panels] == [True, False, False]
    assert len({p["xaxis"] for p in panels}) == 3
    domains = [fig["layout"]["xaxis" + ("" if i == 0 else str(i + 1))]["domain"] for i in range(3)]
    assert domains[0][1] <= domains[1][0] and domains[1][1] <= domains[2][0]  # left to right
    for p in panels:
        z = np.array(p["z"], dtype=float)
        assert z.shape == (128, 128) and 0.95 < z.max() <= 1 and z.min() >= 0  # 2x2 block means of Â
        top = np.argwhere(z >= 0.9 * z.max()).mean(axis=0)
        assert abs(top - 63.5).max() < 1.5  # centred
    rn, r31 = (np.array(p["z"]) for p in (panels[0], panels[2]))
    assert (r31 > 0.5).sum() > 10 * (rn > 0.5).sum()  # the large kernel's ERF is the wider one
    assert "erf" not in erf["figs"]  # the r table replaces the plain r heatmap

    # Table 10: rows = arms (the file's rows, in order), columns = t, the paper's numbers beside
    t10 = next(t for t in erf["analysisTables"] if t["key"] == "erf")
    assert t10["groups"][1:9] == ["t = 20%", "t = 20%", "t = 30%", "t = 30%", "t = 50%", "t = 50%", "t = 99%", "t = 99%"]
    assert t10["headers"][:3] == ["Model", "r (%)", "paper"]
    rows = {r[0]: r for r in t10["rows"]}
    assert list(rows) == list(TABLE10)
    assert rows["ResNet-101"][1:9] == ["0.9", "0.9", "1.5", "1.5", "3.2", "3.2", "22.4", "22.4"]
    assert rows["RepLKNet-31"][1:3] == ["16.6 ± 0.4", "16.3"] and rows["RepLKNet-31"][-1] == "2"  # two seeds
    assert rows["ResNet-152"][1:3] == ["–", "1.1"]  # not analysed yet: the paper's number still beside
    assert any("not analysed yet: ResNet-152" in n for n in t10["notes"])

    # Figure 5: per-category points and a mean line per model
    f5 = erf["figs"]["shape_bias"]
    points = [tr for tr in f5["data"] if tr["mode"] == "markers"]
    lines = [tr for tr in f5["data"] if tr["mode"] == "lines"]
    assert [p["name"] for p in points] == ["model=resnet101", "model=replknet_13", "model=replknet_31b"]
    assert all(len(p["y"]) == 16 for p in points) and points[2]["x"][0] == pytest.approx(0.6)
    assert [ln["x"] for ln in lines] == [[0.2, 0.2], [0.5, 0.5], [0.6, 0.6]]
    assert "template" not in f5["layout"]
    sb = next(t for t in erf["analysisTables"] if t["key"] == "shape_bias")
    assert [r[:2] for r in sb["rows"]] == [["model=resnet101", "0.200"], ["model=replknet_13", "0.500"],
                                          ["model=replknet_31b", "0.600"]]

    # Figure 6: per arm, the large kernel (BN fused) and, with the 3x3 branch, also the merged kernel
    kfigs = {k: v for k, v in rep["figs"].items() if k.startswith("kernel_maps")}
    heat = [tr for f in kfigs.values() for tr in f["data"]]
    names = [tr["name"] for tr in heat]
    assert len(heat) == 6 and sum("merged" in n for n in names) == 2 and all("<br>" in n for n in names) and sum("BN fused" in n for n in names) == 2
    assert all(tr["zmin"] == 0 and tr["zmax"] == 1 for tr in heat)
    merged = np.array(next(tr["z"] for tr in heat if "merged" in tr["name"] and "k=13" in tr["name"]))
    assert merged.shape == (13, 13) and merged[6, 6] == 1.0 and merged[5, 5] > merged[6, 0]  # centre 3x3 enhanced
    kt = next(t for t in rep["analysisTables"] if t["key"] == "kernels")
    assert len(kt["rows"]) == 4 and kt["rows"][1][1] == "yes" and kt["rows"][1][2:4] == ["0.200", "0.350"]
    assert "0.053" in kt["notes"][0]  # uniform central 3x3 share of a 13x13 kernel: 9/169


def test_remote_or_missing_artifacts_give_a_note_not_an_error(analysed: tuple[str, Path], tmp_path: Path) -> None:
    from ablate.dashboard import report

    url, _ = analysed
    store = Store(url, create=False)
    (tmp_path / "empty").mkdir()
    for where in ("s3://bucket/arts", tmp_path / "none", tmp_path / "empty"):
        blobs = blobs_of(report(store, names=["erf", "reparam"], artifacts=where))
        assert "erf_maps" not in blobs["erf"]["figs"] and "shape_bias" in blobs["erf"]["figs"]
        assert not any(k.startswith("kernel_maps") for k in blobs["reparam"]["figs"])
        t10 = next(t for t in blobs["erf"]["analysisTables"] if t["key"] == "erf")
        assert len(t10["rows"]) == 4 and any("maps not drawn" in n for n in t10["notes"])
    store.close()


def test_studies_with_erf_or_kernel_maps_are_never_kept_by_the_page_cache(analysed: tuple[str, Path],
                                                                          tmp_path: Path) -> None:
    """Their arrays change on disk without the database knowing: ``dashboard --out`` builds them every time
    (``dashboard.cache``)."""
    from ablate.dashboard import report
    from ablate.dashboard.appendix import reads_artifacts
    from ablate.dashboard.data import load_studies

    url, arts = analysed
    store = Store(url, create=False)
    kinds = {r.name: reads_artifacts(r) for r in load_studies(store)}
    assert kinds == {"erf": True, "reparam": True}, kinds
    from ablate.dashboard.cache import BlobCache

    first = report(store, artifacts=arts, cache=True)
    assert list(BlobCache.open(store, arts).folder.glob("*.blob")) == []
    assert "erf_maps" in blobs_of(first)["erf"]["figs"]
    store.close()


def test_cli_dashboard_draws_the_analyses_without_torch_timm_or_ray(analysed: tuple[str, Path], tmp_path: Path) -> None:
    """`ablate dashboard --out` reads the arrays (numpy, the artifact store) but imports no model code."""
    import os

    from test_cli_imports import NEVER, run_cli

    url, arts = analysed
    env = dict(os.environ, ABLATE_DB=url, ABLATE_ARTIFACTS=str(arts))
    loaded = run_cli(tmp_path, "dashboard", "--out", "report.html", env=env)
    assert "numpy" in loaded and not loaded & NEVER, sorted(loaded & NEVER)
    blobs = blobs_of((tmp_path / "report.html").read_text())
    assert {"erf_maps", "shape_bias"} <= set(blobs["erf"]["figs"]) and "kernel_maps" in blobs["reparam"]["figs"]


def test_browser_renders_the_appendix_page(analysed: tuple[str, Path], tmp_path: Path) -> None:
    from _browser import CHROMIUM
    from ablate.dashboard import write_report
    from test_dashboard import keep_screenshot

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    url, arts = analysed
    store = Store(url, create=False)
    page = write_report(store, tmp_path / "report.html", artifacts=arts)
    store.close()
    shots = {}
    with Chromium() as c:
        c.load(page.as_uri() + "#erf")
        c.evaluate("window.ablateReady", await_promise=True)
        c.evaluate("window.ablateDrawAll()", await_promise=True)
        plots = c.evaluate("Array.from(document.querySelectorAll('section.study:not([hidden]) .js-plotly-plot'))"
                           ".map(d => [d.dataset.key, d.data.length])")
        table = c.evaluate("document.querySelector('section.study:not([hidden]) .analysis-table').innerText")
        c.evaluate("document.querySelector('[data-key=erf_maps]').scrollIntoView({block: 'center'})")
        shots["erf"] = pixel_stddev(c.screenshot(tmp_path / "appendix-erf.png"))
        c.evaluate("window.ablateShow('reparam')", await_promise=True)
        c.evaluate("window.ablateDrawAll()", await_promise=True)
        kplots = c.evaluate("Array.from(document.querySelectorAll('section.study:not([hidden]) .js-plotly-plot'))"
                            ".map(d => d.dataset.key)")
        c.evaluate("document.querySelector('[data-key=kernel_maps]').scrollIntoView({block: 'center'})")
        shots["kernels"] = pixel_stddev(c.screenshot(tmp_path / "appendix-kernels.png"))
        errors = c.errors()
    for png in tmp_path.glob("appendix-*.png"):
        keep_screenshot(png)
    assert errors == []
    assert ["erf_maps", 3] in plots and ["shape_bias", 6] in plots
    assert "Table 10" in table and "RepLKNet-31" in table and "16.3" in table
    assert "kernel_maps" in kplots
    assert all(v > 5 for v in shots.values()), shots
