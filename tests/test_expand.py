"""Expansion: grid, zipped axes, exclusions, seeds, and ids that are stable across machines."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.expand import expand, trial_id
from ablate.study import StudyError, load_study
from conftest import tiny_study, write_study


def _load(tmp_path: Path, **over) -> tuple:
    f = write_study(tmp_path / "s.yaml", tiny_study("s", "/nowhere", **over))
    study = load_study(f)
    return study, expand(study, f)


def test_grid_is_the_cartesian_product(tmp_path: Path) -> None:
    _, trials = _load(tmp_path, axes={"grid": {"model.kwargs.kernel_size": [3, 5, 7], "recipe.lr": [0.1, 0.01]}})
    assert len(trials) == 6
    assert {(t.params["model.kwargs.kernel_size"], t.params["recipe.lr"]) for t in trials} == \
        {(k, lr) for k in (3, 5, 7) for lr in (0.1, 0.01)}
    assert trials[0].config["model"]["kwargs"] == {"width_mult": 0.1, "kernel_size": 3}
    assert trials[1].config["recipe"]["lr"] == 0.01


def test_zip_varies_axes_together_like_table12_rows(tmp_path: Path) -> None:
    _, trials = _load(tmp_path, axes={"zip": [{"model.kwargs.kernel_size": [9, 3, 13, 3],
                                               "model.kwargs.dilation": [1, 4, 1, 6]}]})
    assert [(t.params["model.kwargs.kernel_size"], t.params["model.kwargs.dilation"]) for t in trials] == \
        [(9, 1), (3, 4), (13, 1), (3, 6)]


def test_zip_times_grid_times_seeds_minus_exclusions(tmp_path: Path) -> None:
    _, trials = _load(tmp_path, seeds=[0, 1, 2], axes={
        "grid": {"model.kwargs.width_mult": [0.1, 0.2]},
        "zip": [{"model.kwargs.kernel_size": [3, 5], "model.kwargs.dilation": [1, 2]}],
        "exclude": [{"model.kwargs.width_mult": 0.2, "model.kwargs.kernel_size": 5}]})
    assert len(trials) == (2 * 2 - 1) * 3
    assert not any(t.params["model.kwargs.width_mult"] == 0.2 and t.params["model.kwargs.kernel_size"] == 5
                   for t in trials)
    assert sorted({t.seed for t in trials}) == [0, 1, 2]
    assert len({t.arm for t in trials}) == 3


def test_seeds_as_a_count(tmp_path: Path) -> None:
    study, trials = _load(tmp_path, seeds=3)
    assert study.seeds == [0, 1, 2] and len(trials) == 6


def test_ids_are_stable_hashes_of_the_resolved_config(tmp_path: Path) -> None:
    _, a = _load(tmp_path)
    _, b = _load(tmp_path)
    assert [t.id for t in a] == [t.id for t in b]
    assert len({t.id for t in a}) == len(a)
    # the same config written differently (key order) has the same id; any change gives a new one
    cfg = a[0].config
    assert trial_id(dict(reversed(list(cfg.items())))) == a[0].id
    changed = dict(cfg, seed=99)
    assert trial_id(changed) != a[0].id
    # pinned value: a change here means every stored study would rerun from scratch
    assert trial_id({"a": 1, "b": [1, 2.5, "x"]}) == "33b6b831cabb"  # sha256 of {"a":1,"b":[1,2.5,"x"]}


def test_recipe_change_changes_ids_not_the_order(tmp_path: Path) -> None:
    _, a = _load(tmp_path)
    _, b = _load(tmp_path, recipe={"epochs": 2, "batch_size": 8, "lr": 0.05, "warmup_epochs": 0})
    assert not {t.id for t in a} & {t.id for t in b}


@pytest.mark.parametrize("axes, field", [
    ({"grid": {"kernel_size": [3]}}, "axes: 'kernel_size'"),
    ({"grid": {"recipe.nope": [3]}}, "axes: 'recipe.nope'"),
    ({"grid": {"model.kernel_size": [3]}}, "axes: 'model.kernel_size'"),
    ({"grid": {"model.kwargs.kernel_size": [3]}, "exclude": [{"model.kwargs.kernel_size": 3}]}, "axes"),
    ({"grid": {"recipe.lr": [-1.0]}}, "axes: recipe.lr"),
])
def test_bad_axes_are_study_errors(tmp_path: Path, axes: dict, field: str) -> None:
    f = write_study(tmp_path / "s.yaml", tiny_study("s", "/nowhere", axes=axes))
    with pytest.raises(StudyError) as e:
        expand(load_study(f), f)
    assert e.value.field.startswith(field)
    assert e.value.file == str(f)


def test_speed_only_settings_do_not_change_trial_ids(tmp_path: Path) -> None:
    """issue 8: `recipe.workers: 1` (data-loader processes) must not retrain the whole study."""
    _, a = _load(tmp_path, axes={"grid": {"model.kwargs.kernel_size": [3, 5]}})
    recipe = {"epochs": 1, "batch_size": 8, "lr": 0.05, "warmup_epochs": 0}  # tiny_study's
    _, b = _load(tmp_path, axes={"grid": {"model.kwargs.kernel_size": [3, 5]}}, recipe=dict(recipe, workers=3))
    assert [t.id for t in a] == [t.id for t in b]
    assert b[0].config["recipe"]["workers"] == 3  # still in the config: the trainer uses it
    _, c = _load(tmp_path, axes={"grid": {"model.kwargs.kernel_size": [3, 5]}}, recipe=dict(recipe, epochs=2))
    assert [t.id for t in a] != [t.id for t in c]  # a setting that changes the numbers does change it


def test_identity_drops_speed_only_and_retired_paths() -> None:
    from ablate.expand import identity

    cfg = {"recipe": {"lr": 0.1, "workers": 8, "resolution": 224}, "model": {"name": "m"}, "seed": 0}
    assert identity(cfg) == {"recipe": {"lr": 0.1}, "model": {"name": "m"}, "seed": 0}
    assert cfg["recipe"]["workers"] == 8  # the config itself is untouched
    assert trial_id(cfg) == trial_id({"recipe": {"lr": 0.1}, "model": {"name": "m"}, "seed": 0})


def test_recipe_resolution_is_refused_with_where_the_size_goes(tmp_path: Path) -> None:
    f = write_study(tmp_path / "r.yaml", tiny_study("r", "/nowhere", recipe={"epochs": 1, "resolution": 224}))
    with pytest.raises(StudyError, match="dataset.image_size"):
        load_study(f)
