"""Every study file in studies/ loads and plans under each profile; the paper's tables they reproduce
(Table 11, Table 12, Guideline 3 / Appendix F, Sec. 4.2) are expanded as the paper lays them out, and
their demo profiles are tiny (Fashion-MNIST at 32x32, a few hundred images, 1-2 epochs).

Planning at 224 builds each model on the meta device, so the paper profiles plan in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ablate.plan import make_plan
from ablate.study import load_study, profile_names
from ablate.zoo import as_printed

STUDIES = Path(__file__).resolve().parents[1] / "studies"
NEW = ("kernel_size", "reparam", "convnext_kernels", "replknet_kernels")
FILES = sorted(STUDIES.glob("*.yaml"))



@pytest.fixture(scope="module")
def plans() -> dict:
    cache: dict = {}

    def get(name: str, profile: str):
        if (name, profile) not in cache:
            cache[name, profile] = make_plan(STUDIES / f"{name}.yaml", profile)
        return cache[name, profile]

    return get


def test_all_new_study_files_exist():
    assert {f.stem for f in FILES} >= set(NEW)


@pytest.mark.parametrize("file", FILES, ids=[f.stem for f in FILES])
def test_every_profile_loads(file):
    names = profile_names(file)
    if file.stem in NEW:
        assert {"paper", "demo"} <= set(names)
    for p in [None, *names]:
        load_study(file, p)


@pytest.mark.parametrize("profile", ["paper", "demo"])
@pytest.mark.parametrize("name", NEW)
def test_plans(plans, name, profile):
    plan = plans(name, profile)
    assert plan.trials and all(t.n_params > 0 and t.flops > 0 for t in plan.trials)
    assert len({t.trial.id for t in plan.trials}) == len(plan.trials)


@pytest.mark.parametrize("name", NEW)
def test_demo_is_tiny(plans, name):
    s = plans(name, "demo").study
    assert s.dataset.name == "fashion_mnist" and s.dataset.image_size == 32
    assert s.dataset.train_subset <= 1000 and s.dataset.val_subset <= 500
    assert s.recipe.epochs <= 2 and s.resources.gpus == 0
    assert max(t.n_params for t in plans(name, "demo").trials) < 1_000_000
    assert not s.table.paper  # paper numbers are not for a toy run


def _by(plan, key):
    return {str(t.trial.params[key]): t for t in plan.trials}


def test_kernel_size_study(plans):
    """MobileNetV2 3/7/9/13; the 9x9 and 13x13 rows are Table 12's dense rows (4.0M, 4.6M)."""
    plan = plans("kernel_size", "paper")
    rows = _by(plan, "model.kwargs.kernel_size")
    assert list(rows) == ["3", "7", "9", "13"]
    assert round(rows["9"].n_params / 1e6, 1) == 4.0 and round(rows["13"].n_params / 1e6, 1) == 4.6
    assert round(rows["9"].flops / 1e6, 1) == 466.5 and round(rows["13"].flops / 1e6, 1) == 669.1


def test_reparam_study(plans):
    """Guideline 3: 9x9 / 13x13 with and without a 3x3 re-param; the paper's 72.53 -> 73.24 (13x13)
    in table.paper; params/FLOPs are of the deploy form, so both arms of a kernel size cost the same."""
    plan = plans("reparam", "paper")
    arms = {(t.trial.params["model.kwargs.kernel_size"], t.trial.params["model.kwargs.small_kernel"]): t
            for t in plan.trials}
    assert set(arms) == {(9, None), (9, 3), (13, None), (13, 3)}
    for k in (9, 13):
        assert (arms[k, None].n_params, arms[k, None].flops) == (arms[k, 3].n_params, arms[k, 3].flops)
    paper = {(r["match"]["model.kwargs.kernel_size"], r["match"]["model.kwargs.small_kernel"]): r["Top-1"]
             for r in plan.study.table.paper}
    assert paper[13, None] == 72.53 and paper[13, 3] == 73.24 and paper[9, None] == 72.67


def test_convnext_study_matches_table11(plans):
    """Table 11's five ImageNet rows, with the printed Params / FLOPs matching the plan's."""
    plan = plans("convnext_kernels", "paper")
    assert len(plan.trials) == 5
    for row in plan.study.table.paper:
        (t,) = [t for t in plan.trials if all(t.trial.config["model"]["name"] == v if k == "model.name"
                                              else t.trial.params[k] == v for k, v in row["match"].items())]
        assert as_printed(t.n_params, row["Params"]) and as_printed(t.flops, row["FLOPs"]), row


def test_replknet_study(plans):
    """Sec. 4.2's kernel sizes on RepLKNet-B; 31-29-27-13 is RepLKNet-31B (79M, 15.3G)."""
    plan = plans("replknet_kernels", "paper")
    ks = [t.trial.params["model.kwargs.kernel_sizes"] for t in plan.trials]
    assert ks == [[3, 3, 3, 3], [7, 7, 7, 7], [13, 13, 13, 13], [25, 25, 25, 13], [31, 29, 27, 13]]
    last = plan.trials[-1]
    assert (last.n_params, last.flops) == (79_390_824, 15_353_525_248)


def test_plan_command_on_a_new_study():
    from typer.testing import CliRunner

    from ablate.cli import app

    res = CliRunner().invoke(app, ["plan", str(STUDIES / "replknet_kernels.yaml"), "-p", "demo", "-f", "json"])
    assert res.exit_code == 0, res.output
    trials = json.loads(res.output)["trials"]
    assert [t["model.kwargs.kernel_sizes"] for t in trials][-1] == [31, 29, 27, 13]
    assert all(t["params"] > 0 and t["flops"] > 0 for t in trials)
