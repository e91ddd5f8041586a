"""Issue 9 items 2-4: the table is the study file (arms removed, added, reordered; seeds added; other
profiles; results of other code), good defaults without a ``table`` section, and outputs fit for a
paper (LaTeX) and a script (CSV). In-memory records shaped as ``ablate run`` stores them."""

from __future__ import annotations

import csv
import io


from _synth import trial
from ablate.store import PENDING, StudyRecord
from ablate.study import TableSpec
from ablate.tables import DAGGER, NOT_IN_FILE, STALE, build_table, render

K = "model.kwargs.kernel_size"
LR = "recipe.lr"


def file_spec(kernels, seeds, *, table=None, profile=None, metric=None, lrs=None) -> dict:
    """A study spec as ``register`` stores it (Study.model_dump): axes, seeds, profile, table."""
    grid = {K: list(kernels)} | ({LR: list(lrs)} if lrs else {})
    return {"name": "sc", "description": "", "model": {"name": "mobilenetv2_lk", "kwargs": {}},
            "axes": {"grid": grid, "zip": [], "exclude": []}, "seeds": list(seeds),
            "dataset": {"name": "fashion_mnist", "image_size": 32}, "metric": metric or {"name": "top1", "mode": "max"},
            "table": table, "profile": profile}


def run(kernels, seeds, value=lambda k, s: 60 + k + 0.1 * s, *, profile="", lrs=None, **kw):
    """Trials as a run of the file would have stored them (config with the file's dataset)."""
    out = []
    for k in kernels:
        for lr in (lrs or [None]):
            for s in seeds:
                params = {K: k} | ({LR: lr} if lr is not None else {})
                t = trial("sc", params, s, {"top1": value(k, s) + (lr or 0), "val_loss": 1.0 / k}, **kw)
                t.config["dataset"] = {"name": "fashion_mnist", "image_size": 32}
                t.profile = profile
                out.append(t)
    return out


KTABLE = TableSpec.model_validate({"columns": [{"header": "K", "source": K}, {"header": "Top-1", "source": "metric:top1"}],
                                   "baseline": {K: 3}}).model_dump(mode="json")


def firsts(t) -> list[str]:
    return [r[0] for r in t.rows]


def test_arm_removed_from_the_file_leaves_the_table_and_all_shows_it_marked():
    rec = StudyRecord("sc", "", file_spec([3, 5], [0, 1, 2], table=KTABLE), run([3, 5, 7], [0, 1, 2]))
    t = build_table(rec)
    assert firsts(t) == ["3", "5"] and not any(NOT_IN_FILE in n for n in t.notes)
    every = build_table(rec, all_arms=True)
    assert firsts(every) == ["3", "5", f"7 {NOT_IN_FILE}"]
    row7 = every.rows[2]
    assert row7[1] == "67.10 ± 0.10" and row7[2] == "–"  # shown, not compared with the baseline
    assert not every.bold[2][1]  # the best of the file's arms is bold, not a removed arm's
    assert any(n.startswith(f"{NOT_IN_FILE} Not in the current study file") for n in every.notes)
    raw7 = every.raw[2]
    assert raw7["in_study_file"] is False and raw7["seeds"] == 3
    # the family tested against the baseline is the file's arms only: Holm's m is 1, not 2
    assert "(m = 1)" in next(n for n in every.notes if n.startswith("Δ is"))


def test_arm_added_to_the_file_is_a_row_of_dashes_until_it_runs():
    rec = StudyRecord("sc", "", file_spec([3, 9, 5], [0, 1], table=KTABLE), run([3, 5], [0, 1]))
    t = build_table(rec)
    assert firsts(t) == ["3", "9", "5"]  # the file's order
    assert t.rows[1] == ["9", "–", "–", "0/2"]
    assert t.raw[1]["trial_ids"] == "" and t.raw[1]["seeds_completed"] == 0


def test_seed_added_counts_distinct_seeds_against_the_declared_ones():
    trials = run([3, 5], [0, 1])
    again = run([5], [1], value=lambda k, s: 99.0)  # seed 1 of K=5 registered again by a changed file
    rec = StudyRecord("sc", "", file_spec([3, 5], [0, 1, 2], table=KTABLE), trials + again)
    t = build_table(rec)
    assert [r[-1] for r in t.rows] == ["2/3", "2/3"]  # distinct seeds present / declared
    assert t.rows[1][1] == f"{(65.0 + 99.0) / 2:.2f} ± {abs(99.0 - 65.0) / 2 ** 0.5:.2f}"  # the newest registration
    every = build_table(rec, all_arms=True)
    assert firsts(every)[2] == f"5 {NOT_IN_FILE}" and every.rows[2][-1] == "1/1"  # the superseded trial


def test_other_profiles_trials_stay_out_of_the_table():
    demo = run([3, 5], [0, 1], value=lambda k, s: 10.0, profile="demo")
    base = run([3, 5], [0, 1], profile="")
    rec = StudyRecord("sc", "", file_spec([3, 5], [0, 1], table=KTABLE), demo + base)
    t = build_table(rec)
    assert [r[1] for r in t.rows] == ["63.05 ± 0.07", "65.05 ± 0.07"]
    every = build_table(rec, all_arms=True)
    assert firsts(every) == ["3", "5", f"3 {NOT_IN_FILE}", f"5 {NOT_IN_FILE}"]
    # trials registered before ablate recorded profiles (profile None) count as the file's
    legacy = run([3, 5], [0, 1], profile=None)
    assert [r[-1] for r in build_table(StudyRecord("sc", "", rec.spec, legacy)).rows] == ["2/2", "2/2"]


def test_results_made_by_other_code_are_marked():
    trials = run([3, 5], [0, 1])
    for t in trials[:2]:  # K=3 made by another commit
        t.provenance = {"ablate_version": "0.0.1", "git_commit": "0" * 40, "git_dirty": False}
    t = build_table(StudyRecord("sc", "", file_spec([3, 5], [0, 1], table=KTABLE), trials))
    assert firsts(t) == [f"3 {STALE}", "5"]
    assert any(n.startswith(f"{STALE} Made by other code") for n in t.notes)
    assert t.raw[0]["other_code"] is True and t.raw[1]["other_code"] is False


def test_a_record_without_a_study_file_keeps_every_arm():
    from _synth import record

    t = build_table(record("free", [trial("free", {K: 5}, 0, {"top1": 1.0}), trial("free", {K: 3}, 0, {"top1": 2.0})]))
    assert firsts(t) == [f"{K}=5", f"{K}=3"] and t.headers == ["Trial", "Top-1", "Params", "FLOPs", "Seeds"]


# -- defaults without a table section --------------------------------------------------------------
def test_default_table_shows_axes_metric_params_and_flops_at_their_resolution():
    rec = StudyRecord("sc", "", file_spec([3, 5], [0, 1, 2], lrs=[0.1, 0.01]), run([3, 5], [0, 1, 2], lrs=[0.1, 0.01]))
    t = build_table(rec)
    assert t.headers == ["kernel_size", "lr", "Top-1", "Params", "FLOPs @32", "Seeds"]
    assert [r[:2] for r in t.rows] == [["3", "0.1"], ["3", "0.01"], ["5", "0.1"], ["5", "0.01"]]
    assert t.rows[0][2:] == ["63.20 ± 0.10", "4.0M", "300.0M", "3/3"]
    assert sum(map(sum, t.bold)) == 1 and t.bold[2][2]  # best Top-1: K=5, lr 0.1


def test_default_table_with_only_a_baseline_adds_delta_and_the_test():
    spec = file_spec([3, 5, 7], [0, 1, 2], table=TableSpec.model_validate({"baseline": {K: 3}}).model_dump(mode="json"))
    noise = {0: 0.0, 1: 0.3, 2: -0.2}
    rec = StudyRecord("sc", "", spec, run([3, 5, 7], [0, 1, 2], value=lambda k, s: 70 + (k == 5) * (1 + noise[s])
                                          + (k == 7) * noise[s]))
    t = build_table(rec)
    assert t.headers == ["kernel_size", "Top-1", "Δ Top-1", "p (Holm)", "Params", "FLOPs @32", "Seeds"]
    assert t.rows[0][2:4] == ["baseline", "–"]
    assert t.rows[1][2].startswith("+1.03") and float(t.rows[1][3]) < 0.05
    assert t.rows[2][2] == f"+0.03{DAGGER}" and float(t.rows[2][3]) > 0.05
    assert "delta_top_1_p_holm" in t.raw[1]


def test_default_table_names_the_study_metric_and_bolds_by_its_mode():
    spec = file_spec([3, 5], [0], metric={"name": "val_loss", "mode": "min"})
    t = build_table(StudyRecord("sc", "", spec, run([3, 5], [0])))
    assert t.headers[:2] == ["kernel_size", "Val loss"]
    assert t.rows[1][1] == "0.20" and t.bold[1][1] and not t.bold[0][1]  # 1/5 < 1/3: K=5 is best


def test_pending_arm_without_params_or_flops_yet():
    trials = run([3], [0]) + run([5], [0], status=PENDING, n_params=None, flops=None)
    t = build_table(StudyRecord("sc", "", file_spec([3, 5], [0]), trials))
    assert t.rows[1] == ["5", "–", "–", "–", "0/1"]


# -- formats ---------------------------------------------------------------------------------------
def fmt_record() -> StudyRecord:
    table = TableSpec.model_validate({"columns": [{"header": "K_size & co", "source": K},
                                                  {"header": "Top-1", "source": "metric:top1"},
                                                  {"header": "FLOPs", "source": "flops"}],
                                      "baseline": {K: 5}}).model_dump(mode="json")
    vals = {3: [76.3, 76.1, 76.5], 5: [100.0, 99.9, 100.1]}
    return StudyRecord("sc_fmt", "", file_spec([5, 3], [0, 1, 2], table=table),
                       run([5, 3], [0, 1, 2], value=lambda k, s: vals[k][s]))


def test_csv_is_snake_case_rounded_and_one_value_per_column():
    rows = list(csv.DictReader(io.StringIO(render(fmt_record(), "csv"))))
    head = list(rows[0])
    assert head[:7] == ["param_model_kwargs_kernel_size", "k_size_co", "top_1_mean", "top_1_std", "top_1_n",
                        "top_1_trials", "delta_top_1"]
    assert all(h == h.lower() and " " not in h for h in head)
    assert {"delta_top_1_p", "delta_top_1_p_holm", "delta_top_1_ci_low", "flops", "seeds", "seeds_completed"} <= set(head)
    three = rows[1]
    assert three["delta_top_1"] == "-23.7"  # 76.3 - 100.0 is -23.699999999999996 in floating point
    assert three["top_1_mean"] == "76.3" and three["top_1_std"] == "0.2" and three["top_1_n"] == "3"
    assert len(three["delta_top_1_p"]) <= 10 and float(three["delta_top_1_p"]) < 0.01
    assert three["flops"] == "300000000"


def test_latex_has_true_minus_label_escapes_and_bold():
    tex = render(fmt_record(), "latex")
    assert "\\usepackage" not in tex and "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\label{tab:sc_fmt}" in tex and "\\caption{sc\\_fmt}" in tex
    assert "K\\_size \\& co & Top-1 & $\\Delta$ Top-1 & FLOPs @32 & Seeds" in tex
    assert "$-$23.70" in tex and " -23.70" not in tex
    assert "\\textbf{100.00 $\\pm$ 0.10}" in tex


def test_markdown_prints_n_lt_3_as_text_in_a_terminal():
    md = render(StudyRecord("sc", "", file_spec([3, 5], [0, 1], table=KTABLE), run([3, 5], [0, 1])), "md")
    assert "+2.00 (n<3)" in md and "&lt;" not in md
    assert "(n<3): not tested" in md
