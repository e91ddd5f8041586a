"""Tables: every format on a study really run on Ray (``ran_study``), and the paper's layouts
(Tables 10, 11, 12, kernel-size and re-param studies) on in-memory records with known numbers."""

from __future__ import annotations

import copy
import csv
import io
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from _synth import record, trial
from ablate.cli import app
from ablate.store import FAILED, PENDING
from ablate.study import TableSpec
from ablate.tables import DAGGER, FORMATS, SIGNIFICANT, build_table, render, to_html_fragment

ROOT = Path(__file__).resolve().parent.parent


class _Cells(HTMLParser):
    """Rows of an HTML table as lists of (text, bold, colspan)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[tuple[str, bool, int]]] = []
        self._cell: list[str] | None = None
        self._bold = False
        self._span = 1

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell, self._bold, self._span = [], False, int(dict(attrs).get("colspan", 1))
        elif tag == "b":
            self._bold = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(("".join(self._cell), self._bold, self._span))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def html_rows(text: str) -> list[list[tuple[str, bool, int]]]:
    p = _Cells()
    p.feed(text)
    return p.rows


# -- the real study ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(ran_study):
    return ran_study["store"].load(ran_study["name"], history=True)


def test_markdown_of_real_study(real):
    md = render(real, "md")
    lines = md.splitlines()
    assert lines[0] == "**tiny**"
    assert lines[2] == "| Kernel | Top-1 | Params | FLOPs @16 | Seeds |"
    body = [l for l in lines if l.startswith("| 3x3") or l.startswith("| 5x5")]  # "3x3 §" from a dirty tree
    assert len(body) == 2 and all(l.endswith("| 2/2 |") for l in body)
    # each Top-1 cell is mean ± std over the two seeds, as stored
    for arm_k, line in zip((3, 5), body):
        vals = [t.final["top1"] for t in real.trials if t.params["model.kwargs.kernel_size"] == arm_k]
        mean, std = sum(vals) / 2, abs(vals[0] - vals[1]) / math.sqrt(2)
        assert f"{mean:.2f} ± {std:.2f}" in line
    assert "Incomplete" not in md


def test_csv_one_row_per_arm_with_trial_ids(real):
    rows = list(csv.DictReader(io.StringIO(render(real, "csv"))))
    assert len(rows) == 2
    ids = {t.trial_id: t for t in real.trials}
    for row in rows:
        k = int(row["param_model_kwargs_kernel_size"])
        mine = {t.trial_id for t in real.trials if t.params["model.kwargs.kernel_size"] == k}
        assert set(row["trial_ids"].split()) == mine
        assert set(row["top_1_trials"].split()) == mine  # the trials behind the Top-1 cell
        assert float(row["top_1_mean"]) == pytest.approx(sum(ids[i].final["top1"] for i in mine) / 2, abs=1e-4)
        assert row["top_1_n"] == "2" and row["seeds_completed"] == "2" and row["seeds"] == "2"
        assert int(row["params"]) == ids[next(iter(mine))].n_params


def test_latex_is_booktabs(real):
    tex = render(real, "latex")
    assert tex.startswith("\\begin{table}[t]\n\\centering\n\\begin{tabular}{lcccc}\n\\toprule\n")
    assert "Kernel & Top-1 & Params & FLOPs @16 & Seeds \\\\\n\\midrule" in tex
    assert "\\caption{tiny}\n\\label{tab:tiny}" in tex
    assert "$\\pm$" in tex and "\\bottomrule" in tex and tex.rstrip().endswith("\\end{table}")
    assert tex.count("\\textbf{") == 1  # the better arm's Top-1


def test_html_of_real_study_bolds_the_best(real):
    page = render(real, "html")
    assert page.startswith("<!DOCTYPE html>")
    rows = html_rows(page)
    assert [c[0] for c in rows[0]] == ["Kernel", "Top-1", "Params", "FLOPs @16", "Seeds"]
    top = {r[0][0].split()[0]: (r[1][0], r[1][1]) for r in rows[1:]}  # "3x3", or "3x3 §" from a dirty tree
    means = {f"{k}x{k}": sum(t.final["top1"] for t in real.trials if t.params["model.kwargs.kernel_size"] == k)
             for k in (3, 5)}
    best = max(means, key=means.get)
    if means["3x3"] != means["5x5"]:
        assert top[best][1] and not top[min(means, key=means.get)][1]


def test_baseline_delta_untested_at_two_seeds_on_real_study(real):
    rec = copy.deepcopy(real)
    rec.spec["table"]["baseline"] = {"model.kwargs.kernel_size": 3}
    t = build_table(rec)
    assert t.headers[:3] == ["Kernel", "Top-1", "Δ Top-1"]
    by_k = {r[0].split()[0]: r for r in t.rows}
    assert by_k["3x3"][2] == "baseline"
    diff = (sum(x.final["top1"] for x in rec.trials if x.params["model.kwargs.kernel_size"] == 5)
            - sum(x.final["top1"] for x in rec.trials if x.params["model.kwargs.kernel_size"] == 3)) / 2
    assert by_k["5x5"][2] == f"{diff:+.2f} (n<3)"  # two seeds: never a test, never significant
    raw = next(r for r in t.raw if r["param_model_kwargs_kernel_size"] == 5)
    assert raw["delta_top_1_test"] == "none" and raw["delta_top_1_pairs"] == 2 and raw["delta_top_1_significant"] is None
    assert raw["delta_top_1_p"] is None and raw["delta_top_1_p_holm"] is None
    assert any(n.startswith("(n<3): not tested, fewer than 3 seeds shared with the baseline") for n in t.notes)
    assert "Δ is the arm's mean minus the baseline's." in t.notes and not any("Test:" in n for n in t.notes)


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_table_every_format(ran_study, tmp_path, fmt):
    out = tmp_path / f"t.{fmt}"
    r = CliRunner().invoke(app, ["table", "tiny", "--db", ran_study["url"], "--format", fmt, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_text() == render(ran_study["store"].load("tiny"), fmt)


def test_cli_table_rejects_unknown_format(ran_study):
    r = CliRunner().invoke(app, ["table", "tiny", "--db", ran_study["url"], "--format", "docx"])
    assert r.exit_code == 2 and "md, csv, latex, html" in r.output


def test_cli_export_long_format(ran_study, tmp_path):
    import pandas as pd

    rec = ran_study["store"].load("tiny", history=True)
    n_points = sum(len(h) for t in rec.trials for h in t.history.values())
    for suffix in ("csv", "parquet"):
        out = tmp_path / f"all.{suffix}"
        r = CliRunner().invoke(app, ["export", "tiny", "--db", ran_study["url"], "--out", str(out)])
        assert r.exit_code == 0, r.output
        df = pd.read_csv(out) if suffix == "csv" else pd.read_parquet(out)
        assert len(df) == n_points
        assert {"study", "trial_id", "seed", "status", "param.model.kwargs.kernel_size", "epoch", "metric",
                "value", "final"} <= set(df.columns)
        final = df[df["final"].astype(bool) & (df["metric"] == "top1")]
        assert len(final) == 4
        for _, row in final.iterrows():
            t = next(t for t in rec.trials if t.trial_id == row["trial_id"])
            assert row["value"] == pytest.approx(t.final["top1"])
    r = CliRunner().invoke(app, ["export", "nope", "--db", ran_study["url"], "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 2 and "not in" in r.output
    r = CliRunner().invoke(app, ["export", "tiny", "--db", ran_study["url"], "--out", str(tmp_path / "x"),
                                 "--format", "xlsx"])
    assert r.exit_code == 2 and "csv, parquet" in r.output


# -- the paper's layouts on in-memory records --------------------------------------------------
def _spec(table: dict) -> dict:
    """Validate a table section as the study schema would, and return it as stored (JSON)."""
    return TableSpec.model_validate(table).model_dump(mode="json")


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.stem)
def test_study_files_table_sections_are_valid(path):
    raw = yaml.safe_load(path.read_text())
    if raw.get("table"):
        spec = _spec(raw["table"])
        assert spec["columns"]


def table12_record(seeds=(0, 1, 2)):
    raw = yaml.safe_load((ROOT / "studies" / "dilation.yaml").read_text())
    table = _spec(raw["table"])
    top1 = {(9, 1): [72.6, 72.8, 72.7], (3, 4): [57.1, 57.3, 57.2], (13, 1): [72.5, 72.9, 72.2], (3, 6): [51.2, 51.0, 51.4]}
    params = {(9, 1): 4_000_000, (3, 4): 3_500_000, (13, 1): 4_600_000, (3, 6): 3_500_000}
    trials = [trial("dilation", {"model.kwargs.kernel_size": k, "model.kwargs.dilation": d}, s,
                    {"top1": top1[(k, d)][s]}, n_params=params[(k, d)], flops=466_500_000 if k == 9 else 300_000_000)
              for (k, d) in top1 for s in seeds]
    return record("dilation", trials, table)


def test_table12_layout_delta_marks_and_paper_rows():
    t = build_table(table12_record())
    assert t.headers == ["Max RF", "Kernel size", "Dilation", "Top-1", "Δ Top-1", "Params", "FLOPs", "Seeds",
                         "Paper FLOPs", "Paper Params", "Paper Top-1"]
    rows = {(r[1], r[2]): r for r in t.rows}
    assert rows[("9×9", "-")][:5] == ["9", "9×9", "-", "72.70 ± 0.10", "baseline"]
    assert rows[("3×3", "4")][:5] == ["9", "3×3", "4", "57.20 ± 0.10", f"-15.50{SIGNIFICANT}"]
    # 13x13 vs 9x9: differences -0.1, +0.1, -0.5 over 3 seeds: t = -0.945, p = 0.44, not significant
    assert rows[("13×13", "-")][4] == f"-0.17{DAGGER}"
    assert rows[("3×3", "6")][4] == f"-21.50{SIGNIFICANT}"
    assert rows[("3×3", "6")][0] == "13"
    assert rows[("9×9", "-")][8:] == ["319M", "4.0M", "72.67"]
    assert ("Δ is the arm's mean minus the baseline's. Test: two-sided paired t-test over the seeds an arm shares "
            "with the baseline (as scipy.stats.ttest_rel, n = 3 pairs), p-values Holm-adjusted across the arms compared "
            "with the baseline (m = 3), family-wise α = 0.05; the CSV has each arm's p, p_holm and unadjusted 95% CI "
            "of the mean per-seed difference.") in t.notes
    assert f"{SIGNIFICANT} Significantly different from the baseline: Holm-adjusted p ≤ 0.05." in t.notes
    assert any(n.startswith(f"{DAGGER} Not significantly different from the baseline: Holm-adjusted p > 0.05")
               for n in t.notes)
    assert not any("n<3" in n for n in t.notes)  # no untested arm, no note about it
    assert t.bold[t.rows.index(rows[("9×9", "-")])][3] is True  # best Top-1
    assert sum(b for r in t.bold for b in r) == 1
    md = render(table12_record(), "md")
    assert "| **72.70 ± 0.10** |" in md
    tex = render(table12_record(), "latex")
    assert "\\textbf{72.70 $\\pm$ 0.10}" in tex and "$-$0.17$^\\dagger$" in tex and "$\\Delta$ Top-1" in tex
    assert "$-$15.50$^{*}$" in tex and "\\label{tab:dilation}" in tex and "p $\\leq$ 0.05" in tex


def test_table12_with_one_seed_has_no_test():
    t = build_table(table12_record(seeds=(0,)))
    rows = {(r[1], r[2]): r for r in t.rows}
    assert rows[("3×3", "4")][3:5] == ["57.10", "-15.50 (n<3)"]  # no ± with one seed, untested
    assert any(n.startswith("(n<3): not tested") for n in t.notes)
    assert all(r[7] == "1/1" for r in t.rows)


def table11_record():
    table = _spec({
        "columns": [
            {"header": "Kernel size", "source": "model.kwargs.kernel_sizes"},
            {"header": "Architecture", "source": "model.kwargs.variant",
             "labels": {"tiny": "ConvNeXt-Tiny", "small": "ConvNeXt-Small"}},
            {"header": "Top-1", "source": "metric:top1", "group": "ImageNet"},
            {"header": "Params", "source": "params", "group": "ImageNet"},
            {"header": "FLOPs", "source": "flops", "group": "ImageNet"},
            {"header": "mIoU", "source": "metric:ade20k_miou", "group": "ADE20K", "best": "max"},
            {"header": "Params", "source": "metric:ade20k_params", "group": "ADE20K", "format": "human"},
            {"header": "FLOPs", "source": "metric:ade20k_flops", "group": "ADE20K", "format": "human"},
        ],
        "baseline": {"model.kwargs.kernel_sizes": [7, 7, 7, 7], "model.kwargs.variant": "tiny"},
    })
    model = {"name": "convnext_lk", "kwargs": {}}
    arms = {((7, 7, 7, 7), "tiny"): (81.0, 29e6, 4.5e9), ((31, 29, 27, 13), "tiny"): (81.6, 32e6, 6.1e9),
            ((7, 7, 7, 7), "small"): (82.1, 50e6, 8.7e9)}
    trials = []
    for (ks, var), (top1, p, f) in arms.items():
        for s in (0, 1):
            final = {"top1": top1 + 0.1 * s}
            if var == "tiny":  # the ADE20K runs exist for the Tiny models only
                final |= {"ade20k_miou": (44.6 if ks[0] == 7 else 46.2) + 0.2 * s, "ade20k_params": 60e6 if ks[0] == 7 else 64e6,
                          "ade20k_flops": 939e9 if ks[0] == 7 else 973e9}
            trials.append(trial("convnext", {"model.kwargs.kernel_sizes": list(ks), "model.kwargs.variant": var}, s,
                                final, n_params=int(p), flops=int(f), model=model))
    return record("convnext", trials, table)


def test_table11_grouped_headers_and_missing_task():
    t = build_table(table11_record())
    assert t.headers == ["Kernel size", "Architecture", "Top-1", "Δ Top-1", "Params", "FLOPs", "mIoU", "Params",
                         "FLOPs", "Seeds"]
    assert t.groups == ["", "", "ImageNet", "ImageNet", "ImageNet", "ImageNet", "ADE20K", "ADE20K", "ADE20K", ""]
    rows = {(r[0], r[1]): r for r in t.rows}
    assert rows[("31-29-27-13", "ConvNeXt-Tiny")][2:9] == ["81.65 ± 0.07", "+0.60 (n<3)", "32.0M", "6.1G", "46.30 ± 0.14",
                                                         "64.0M", "973.0G"]
    small = rows[("7-7-7-7", "ConvNeXt-Small")]
    assert small[6:9] == ["–", "–", "–"]  # the study did not run ADE20K for Small
    assert small[3] == "+1.10 (n<3)"  # two seeds, differences 1.1 and 1.1: agreeing is not significance
    page = to_html_fragment(t)
    head = html_rows(page)[0]
    assert [(c[0], c[2]) for c in head] == [("", 1), ("", 1), ("ImageNet", 4), ("ADE20K", 3), ("", 1)]
    tex = render(table11_record(), "latex")
    assert "\\multicolumn{4}{c}{ImageNet} & \\multicolumn{3}{c}{ADE20K}" in tex
    assert "\\cmidrule(lr){3-6} \\cmidrule(lr){7-9}" in tex
    md = render(table11_record(), "md")
    assert "| Kernel size | Architecture | ImageNet Top-1 | ImageNet Δ Top-1 |" in md
    bold_cols = {i for r in t.bold for i, b in enumerate(r) if b}
    assert bold_cols == {2, 6}  # best Top-1 (Small) and best mIoU (the 31x31 Tiny)


def test_table10_erf_ratios():
    table = _spec({"columns": [{"header": "Model", "source": "model.name",
                                "labels": {"resnet101": "ResNet-101", "replknet31b": "RepLKNet-31"}}]
                   + [{"header": f"t = {t}%", "source": f"metric:erf_r{t}", "format": "{v:.1%}", "best": "max"}
                      for t in (20, 30, 50, 99)]})
    paper = {"resnet101": [0.009, 0.015, 0.032, 0.224], "replknet31b": [0.163, 0.247, 0.432, 0.986]}
    trials = [trial("erf", {"model.name": m}, 0, {f"erf_r{t}": v for t, v in zip((20, 30, 50, 99), vals)},
                    model={"name": m, "kwargs": {}}) for m, vals in paper.items()]
    t = build_table(record("erf", trials, table))
    assert t.rows == [["ResNet-101", "0.9%", "1.5%", "3.2%", "22.4%", "1/1"],
                      ["RepLKNet-31", "16.3%", "24.7%", "43.2%", "98.6%", "1/1"]]
    assert t.bold == [[False] * 6, [False, True, True, True, True, False]]


def test_kernel_size_and_reparam_studies():
    table = _spec({"columns": [{"header": "Kernel size", "source": "model.kwargs.kernel_size", "format": "{v}×{v}"},
                               {"header": "Re-param", "source": "model.kwargs.small_kernel",
                                "labels": {"3": "3×3", "null": "-"}},
                               {"header": "Top-1", "source": "metric:top1"}],
                   "baseline": {"model.kwargs.kernel_size": 13, "model.kwargs.small_kernel": None}})
    vals = {(13, None): [72.5, 72.6, 72.4], (13, 3): [73.2, 73.3, 73.25], (31, 3): [73.0, 73.5, 72.1]}
    trials = [trial("reparam", {"model.kwargs.kernel_size": k, "model.kwargs.small_kernel": sk}, s, {"top1": v[s]})
              for (k, sk), v in vals.items() for s in range(3)]
    trials.append(trial("reparam", {"model.kwargs.kernel_size": 31, "model.kwargs.small_kernel": 3}, 3, {},
                        status=FAILED, error="CUDA out of memory"))
    t = build_table(record("reparam", trials, table))
    assert [r[:2] for r in t.rows] == [["13×13", "-"], ["13×13", "3×3"], ["31×31", "3×3"]]
    # differences 0.7, 0.7, 0.85: p = 0.0044, Holm over 2 arms 0.0088; 31x31's seeds disagree: p = 0.41
    assert t.rows[1][3] == f"+0.75{SIGNIFICANT}" and t.rows[2][3] == f"+0.37{DAGGER}"
    assert t.rows[2][4] == "3/4"
    assert any(n.startswith("Incomplete: 9 of 10 trials completed, 1 failed.") for n in t.notes), t.notes


def marks_record():
    """One baseline (K=7, 5 seeds) and an arm for each outcome: a clear gain (K=9), a gain significant
    alone but not after Holm (K=11), noise (K=13), and 2 seeds whose differences agree in sign (K=15)."""
    table = _spec({"columns": [{"header": "K", "source": "model.kwargs.kernel_size"},
                               {"header": "Top-1", "source": "metric:top1"}],
                   "baseline": {"model.kwargs.kernel_size": 7}})
    base = [70.0, 70.4, 69.8, 70.2, 70.1]
    diffs = {9: [1.0, 1.2, 0.9, 1.1, 1.0], 11: [0.3, 0.5, 0.0, 0.4, 0.2], 13: [0.2, -0.3, 0.1, -0.1, 0.0],
             15: [-0.6, -0.3]}
    trials = [trial("marks", {"model.kwargs.kernel_size": 7}, s, {"top1": v}) for s, v in enumerate(base)]
    trials += [trial("marks", {"model.kwargs.kernel_size": k}, s, {"top1": base[s] + x})
               for k, ds in diffs.items() for s, x in enumerate(ds)]
    return record("marks", trials, table)


def test_every_mark_and_holm_in_every_format():
    from scipy import stats

    t = build_table(marks_record())
    cells = {r[0]: r[2] for r in t.rows}
    raw = {r["param_model_kwargs_kernel_size"]: r for r in t.raw}
    assert cells["7"] == "baseline"
    assert cells["9"] == f"+1.04{SIGNIFICANT}"
    # K=11 alone: p = 0.031 < 0.05; Holm over the 3 tested arms ranks it 2nd: 2 x 0.031 = 0.062 > 0.05
    p11 = float(stats.ttest_rel([70.3, 70.9, 69.8, 70.6, 70.3], [70.0, 70.4, 69.8, 70.2, 70.1]).pvalue)
    assert raw[11]["delta_top_1_p"] == pytest.approx(p11, rel=1e-12) and p11 < 0.05
    assert raw[11]["delta_top_1_p_holm"] == pytest.approx(2 * p11, rel=1e-12)
    assert cells["11"] == f"+0.28{DAGGER}" and raw[11]["delta_top_1_significant"] is False
    assert cells["13"] == f"-0.02{DAGGER}"
    assert cells["15"] == "-0.35 (n<3)" and raw[15]["delta_top_1_test"] == "none" and raw[15]["delta_top_1_pairs"] == 2
    assert raw[9]["delta_top_1_pairs"] == 5 and raw[9]["delta_top_1_ci_low"] > 0
    assert raw[13]["delta_top_1_ci_low"] < 0 < raw[13]["delta_top_1_ci_high"]
    assert "(as scipy.stats.ttest_rel, n = 5 pairs), p-values Holm-adjusted across the arms compared with the baseline " \
           "(m = 3), family-wise α = 0.05;" in t.notes[0]
    assert [n[:5] for n in t.notes] == ["Δ is ", f"{SIGNIFICANT} Sig", f"{DAGGER} Not", "(n<3)"]

    md = render(marks_record(), "md")
    assert f"| 9 | **71.14 ± 0.34** | +1.04{SIGNIFICANT} | 5/5 |" in md and "| 15 | 69.75 ± 0.49 | -0.35 (n<3) | 2/2 |" in md
    assert f"3. {DAGGER} Not significantly different" in md and "4. (n<3): not tested" in md  # no "&lt;" in a terminal
    rows = list(csv.DictReader(io.StringIO(render(marks_record(), "csv"))))
    by_k = {r["param_model_kwargs_kernel_size"]: r for r in rows}
    assert float(by_k["11"]["delta_top_1_p_holm"]) == pytest.approx(2 * p11, rel=1e-3)  # 4 significant digits
    assert by_k["11"]["delta_top_1_pairs"] == "5" and by_k["11"]["delta_top_1_significant"] == "False"
    assert by_k["15"]["delta_top_1_p_holm"] == "" and by_k["15"]["delta_top_1_significant"] == ""
    assert by_k["7"]["delta_top_1_p_holm"] == ""  # the baseline itself
    tex = render(marks_record(), "latex")
    assert "+1.04$^{*}$" in tex and "+0.28$^\\dagger$" in tex and "$-$0.35 (n$<$3)" in tex
    assert "(4) (n$<$3): not tested" in tex and "<" not in tex.replace("$<$", "")
    page = html_rows(render(marks_record(), "html"))
    assert [r[2][0] for r in page[1:]] == ["baseline", f"+1.04{SIGNIFICANT}", f"+0.28{DAGGER}", f"-0.02{DAGGER}",
                                            "-0.35 (n<3)"]
    assert "(n&lt;3): not tested" in render(marks_record(), "html")


def test_incomplete_and_unmatched_baseline():
    table = _spec({"columns": [{"header": "K", "source": "model.kwargs.kernel_size"},
                               {"header": "Top-1", "source": "metric:top1"}],
                   "baseline": {"model.kwargs.kernel_size": 99}})
    trials = [trial("inc", {"model.kwargs.kernel_size": 3}, 0, {"top1": 50.0}),
              trial("inc", {"model.kwargs.kernel_size": 5}, 0, {}, status=PENDING)]
    t = build_table(record("inc", trials, table))
    assert t.rows == [["3", "50.00", "1/1"], ["5", "–", "0/1"]]
    assert any("matches no arm" in n for n in t.notes)
    assert any(n.startswith("Incomplete: 1 of 2 trials completed, 1 not run or running.") for n in t.notes)
    assert not any(any(r) for r in t.bold)  # one value: nothing to bold


def test_incomplete_notes_tell_interrupted_from_failures_that_will_recur():
    """issue 8: interrupted is its own status in the notes, and a failure that will recur says so
    instead of inviting a rerun."""
    from ablate.store import INTERRUPTED

    table = _spec({"columns": [{"header": "K", "source": "model.kwargs.kernel_size"},
                               {"header": "Top-1", "source": "metric:top1"}]})
    trials = [trial("mix", {"model.kwargs.kernel_size": 3}, 0, {"top1": 50.0}),
              trial("mix", {"model.kwargs.kernel_size": 5}, 0, {"top1": 40.0}, status=INTERRUPTED),
              trial("mix", {"model.kwargs.kernel_size": 7}, 0, {}, status=FAILED, error="FloatingPointError: nan")]
    trials[2].error_kind = "recurring"
    note = next(n for n in build_table(record("mix", trials, table)).notes if n.startswith("Incomplete"))
    assert "1 interrupted" in note and "1 failed (1 will fail again: fix the study)" in note
    assert "resumes the others from their last epoch" in note


def test_markdown_escapes_pipes_and_html_escapes_markup():
    table = _spec({"columns": [{"header": "Name", "source": "model.kwargs.tag"}, {"header": "Top-1", "source": "metric:top1"}]})
    trials = [trial("esc", {"model.kwargs.tag": "a|<b>"}, 0, {"top1": 1.0})]
    rec = record("esc", trials, table)
    assert "a\\|&lt;b>" in render(rec, "md")  # Markdown renders inline HTML: escaped, shown as text
    assert "a|&lt;b&gt;" in render(rec, "html")
    with pytest.raises(ValueError, match="md, csv, latex, html"):
        render(rec, "docx")


def test_markdown_and_terminal_output_of_hostile_text():
    """Values, headers, notes and the title come from the study file or the database: in Markdown no
    HTML, no row split by a pipe or line break, and in every text format no terminal control sequence."""
    table = _spec({"columns": [{"header": "<img src=x onerror=alert(1)>", "source": "model.kwargs.tag"},
                               {"header": "Top-1", "source": "metric:top1"}],
                   "notes": ["a & b <script>x</script>\nsecond line | pipe"]})
    evil = "<b>bold</b>|x\n| new row \x1b]0;title\x07\x1b[31mred\x1b[0m\x9b2J\u202eevil &amp;"
    rec = record("esc2", [trial("esc2", {"model.kwargs.tag": evil}, 0, {"top1": 1.0})], table)
    md = render(rec, "md")
    body = md.split("\n")
    rows = [ln for ln in body if ln.startswith("| ")]
    assert len(rows) == 2  # header + the one arm: nothing split the row
    # no "<" that could open a tag (">" alone opens nothing, and stays readable in a terminal)
    assert not re.search(r"<[A-Za-z/!?]", md) and "&lt;b>bold&lt;/b>\\|x" in md and "&amp;amp;" in md
    assert "1. a &amp; b &lt;script>x&lt;/script> second line \\| pipe" in md
    for fmt in FORMATS:
        text = render(rec, fmt)
        assert not any(c in text for c in "\x1b\x07\x9b\u202e"), fmt


@pytest.mark.parametrize("fmt", ["{x}", "{v:>200000000}", "{v.__class__}", "{v[0]}", "{v:d}", "{", "{v}\r\nX: 1",
                                 "{v:{v}}", "no field", "{v!x}", "{0}", "{v:.999f}"])
def test_a_bad_format_from_the_database_renders_plainly(fmt):
    """A format no plan checked (an older database, a hand edit) never crashes or allocates: the
    value is shown with the default format instead."""
    import time

    table = _spec({"columns": [{"header": "K", "source": "model.kwargs.kernel_size", "format": fmt},
                               {"header": "P", "source": "params", "format": fmt},
                               {"header": "Top-1", "source": "metric:top1", "format": fmt}]})
    trials = [trial("bad", {"model.kwargs.kernel_size": [3, 5]}, 0, {"top1": 71.234}),
              trial("bad", {"model.kwargs.kernel_size": 7}, 0, {"top1": 70.0})]
    rec = record("bad", trials, table)
    start = time.perf_counter()
    t = build_table(rec)
    assert time.perf_counter() - start < 1.0
    assert t.rows[0][:3] == ["3-5", "4000000", "71.23"] and t.rows[1][0] == "7"
    for f in FORMATS:
        assert len(render(rec, f)) < 20_000


def test_good_formats_still_apply():
    table = _spec({"columns": [{"header": "K", "source": "model.kwargs.kernel_size", "format": "{v}×{v}"},
                               {"header": "Top-1", "source": "metric:top1", "format": "{v:>8.3f}"},
                               {"header": "P", "source": "params", "format": "human"}]})
    t = build_table(record("ok", [trial("ok", {"model.kwargs.kernel_size": 3}, 0, {"top1": 71.2345})], table))
    assert t.rows[0][:3] == ["3×3", "  71.234", "4.0M"]


def test_the_fast_path_of_strip_controls_skips_only_text_it_would_not_change() -> None:
    """``strip_controls`` returns printable text as it is (a table at 10^5 trials has 10^5 cells):
    no printable character is one the full path removes or replaces, and text with controls,
    bidirectional overrides or surrogates still goes through it."""
    import sys

    from ablate.text import _ESCAPES, _SURROGATES, markdown_cell, strip_controls

    printable = "".join(ch for ch in map(chr, range(sys.maxunicode + 1)) if ch.isprintable())
    assert _SURROGATES.sub("\ufffd", _ESCAPES.sub("", printable)) == printable
    assert strip_controls("a\x1b[31mred\x1b[0m\u202eb\ud800") == "ared" + "b\ufffd"
    assert strip_controls("x\ny", keep_newlines=False) == "x y"
    assert markdown_cell("80.1 ± 0.2 | <b>&") == r"80.1 ± 0.2 \| &lt;b>&amp;" and markdown_cell("n<3") == "n<3"
