"""The cache of checked model configs (ablate.model_costs): a plan of configs planned before takes their
params and FLOPs from it, without a build; any change of the model section or the input size is measured
anew; a corrupt file, another code's file or a malformed entry is ignored, never a source of numbers;
`ablate plan` prints the same with and without it. (That a run of cached configs imports no torch in the
driver: tests/test_local_head.py's run through the CLI.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ablate.plan
from ablate import model_costs
from ablate.cli import app
from ablate.model_costs import ModelCosts, code_fingerprint, model_key
from ablate.plan import make_plan
from conftest import tiny_study, write_study


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state folder of this test's own (the cache file lives there), read afresh by this process."""
    d = tmp_path / "state"
    monkeypatch.setenv("ABLATE_STATE_DIR", str(d))
    monkeypatch.delenv("ABLATE_MODEL_COSTS", raising=False)
    monkeypatch.setattr(model_costs, "_SHARED", {})
    return d


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The configs plan measures (builds and counts), in order."""
    calls: list[dict] = []
    real = ablate.plan.measure

    def counting(config: dict) -> tuple[int, int]:
        calls.append(config)
        return real(config)

    monkeypatch.setattr(ablate.plan, "measure", counting)
    return calls


def _rows(plan: ablate.plan.Plan) -> list[tuple[str, int, int]]:
    return [(p.trial.id, p.n_params, p.flops) for p in plan.trials]


def _fresh(f: Path) -> list[tuple[str, int, int]]:
    return _rows(make_plan(f, known=ModelCosts(enabled=False)))


def test_a_second_plan_takes_the_counts_from_the_cache(state: Path, image_folder: Path, measured: list) -> None:
    f = write_study(state.parent / "s.yaml", tiny_study("c", image_folder))
    first = _rows(make_plan(f))
    assert len(measured) == 2 and model_costs.cache_path().is_file()  # kernel 3 and 5
    assert first == _fresh(f)
    measured.clear()
    model_costs._SHARED.clear()  # as a new process reads it
    assert _rows(make_plan(f)) == first and measured == []


def test_a_changed_model_or_input_is_measured_again(state: Path, image_folder: Path, measured: list) -> None:
    f = write_study(state.parent / "s.yaml", tiny_study("c", image_folder))
    make_plan(f)
    for change in ({"model": {"name": "mobilenetv2_lk", "kwargs": {"width_mult": 0.2}}},
                   {"dataset": {"name": "folder", "root": str(image_folder), "image_size": 24}}):
        measured.clear()
        g = write_study(state.parent / "g.yaml", tiny_study("c", image_folder, **change))
        got = _rows(make_plan(g))
        assert len(measured) == 2, change  # both arms: new keys
        assert got == _fresh(g) and got != _fresh(f)


def test_keys_follow_what_the_counts_depend_on(image_folder: Path) -> None:
    base = {"model": {"name": "mobilenetv2_lk", "kwargs": {"kernel_size": 3}},
            "dataset": {"name": "folder", "root": str(image_folder), "image_size": 16}, "seed": 0}
    key = model_key(base)
    assert key == model_key(dict(base, seed=1, recipe={"lr": 1.0}))  # seed and recipe change no count
    assert key != model_key(dict(base, model={"name": "mobilenetv2_lk", "kwargs": {"kernel_size": 5}}))
    assert key != model_key(dict(base, dataset=dict(base["dataset"], image_size=32)))
    assert key != model_key(dict(base, dataset={"name": "fashion_mnist", "image_size": 16}))  # 1 channel, 10 classes
    # a config whose check reads a file is never cached
    assert model_key(dict(base, model={"name": "mobilenetv2_lk", "kwargs": {
        "pretrained": True, "pretrained_cfg_overlay": {"file": "/x.pth"}}})) is None


def _plant(state: Path, f: Path, models: dict, code: str | None = None, checked: list | None = None) -> None:
    """A cache file whose every model entry (the study's keys) holds ``models``' value."""
    keys = {model_key(p.trial.config) for p in make_plan(f, known=ModelCosts(enabled=False)).trials}
    model_costs.cache_path().parent.mkdir(parents=True, exist_ok=True)
    model_costs.cache_path().write_text(json.dumps({
        "format": 1, "code": code or code_fingerprint(), "models": {k: models for k in keys}, "checked": checked or []}))


@pytest.mark.parametrize("case", ["garbage", "other code", "bad entries", "other format"])
def test_a_corrupt_or_foreign_cache_gives_no_numbers(state: Path, image_folder: Path, case: str) -> None:
    f = write_study(state.parent / "s.yaml", tiny_study("c", image_folder))
    expected = _fresh(f)
    if case == "garbage":
        model_costs.cache_path().parent.mkdir(parents=True)
        model_costs.cache_path().write_bytes(b'{"format": 1, "code": "\x00\xff')
    elif case == "other code":  # another ablate checkout, another timm / torch version
        _plant(state, f, [1, 2], code="0" * 64)
    elif case == "bad entries":
        _plant(state, f, [-1, True])
    else:
        _plant(state, f, [1, 2])
        data = json.loads(model_costs.cache_path().read_text())
        model_costs.cache_path().write_text(json.dumps(dict(data, format=0)))
    assert _rows(make_plan(f)) == expected
    data = json.loads(model_costs.cache_path().read_text())  # replaced by this code's entries
    assert data["code"] == code_fingerprint() and sorted(map(tuple, data["models"].values())) == sorted(
        {r[1:] for r in expected})


def test_two_checkouts_used_in_turn_keep_their_own_caches(state: Path, image_folder: Path, measured: list,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A branch and main (or a benchmark's before and after) planned in turn: each code's file stays, so
    neither plan measures again; past KEEP_CODES other codes the oldest files go."""
    f = write_study(state.parent / "s.yaml", tiny_study("c", image_folder))
    real = code_fingerprint()

    def as_code(fp: str) -> None:
        monkeypatch.setattr(model_costs, "code_fingerprint", lambda: fp)
        model_costs._SHARED.clear()  # a new process of that code

    for fp, measures in ((real, 2), ("b" * 64, 2), (real, 0), ("b" * 64, 0)):  # kernel 3 and 5, then none
        as_code(fp)
        measured.clear()
        make_plan(f)
        assert len(measured) == measures, fp
    files = sorted(p.name for p in model_costs.cache_path().parent.glob("*.json"))
    assert files == sorted([real[:16] + ".json", "b" * 16 + ".json"])
    for i in range(model_costs.KEEP_CODES + 2):
        as_code(f"{i:016x}" * 4)
        make_plan(f)
    names = {p.name for p in model_costs.cache_path().parent.glob("*.json")}
    assert len(names) == model_costs.KEEP_CODES + 1 and real[:16] + ".json" not in names


def test_code_fingerprint_covers_ablate_sources_and_libraries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = code_fingerprint()
    code_fingerprint.cache_clear()
    try:
        from importlib import metadata

        real = metadata.version
        monkeypatch.setattr(metadata, "version", lambda pkg: "0.0" if pkg == "timm" else real(pkg))
        assert code_fingerprint() != before
    finally:
        code_fingerprint.cache_clear()


def test_an_unknown_name_is_still_refused_with_a_warm_cache(state: Path, image_folder: Path) -> None:
    f = write_study(state.parent / "s.yaml", tiny_study("c", image_folder))
    make_plan(f)
    model_costs._SHARED.clear()
    bad = write_study(state.parent / "b.yaml", tiny_study("c", image_folder, model={"name": "mobilenetv2_lkk"}))
    r = CliRunner().invoke(app, ["plan", str(bad)])
    assert r.exit_code == 2 and "unknown model 'mobilenetv2_lkk'" in r.output and "mobilenetv2_lk" in r.output


def test_plan_prints_the_same_from_the_cache(state: Path, image_folder: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, measured: list) -> None:
    f = write_study(tmp_path / "s.yaml", tiny_study("c", image_folder))
    args = ["plan", str(f), "--db", f"sqlite:///{tmp_path / 'none.db'}"]
    monkeypatch.setenv("ABLATE_MODEL_COSTS", "0")
    off = CliRunner().invoke(app, args)
    monkeypatch.delenv("ABLATE_MODEL_COSTS")
    model_costs._SHARED.clear()
    cold = CliRunner().invoke(app, args)  # measures and fills the cache
    model_costs._SHARED.clear()
    measured.clear()
    warm = CliRunner().invoke(app, args + ["--format", "json"]), CliRunner().invoke(app, args)
    assert off.exit_code == cold.exit_code == warm[1].exit_code == warm[0].exit_code == 0, off.output
    assert off.output == cold.output == warm[1].output and measured == []
    rows = json.loads(warm[0].output)["trials"]
    assert [(r["trial_id"], r["params"], r["flops"]) for r in rows] == _fresh(f)


def test_a_segmentation_config_is_cached_at_its_own_input(state: Path, tmp_path: Path, measured: list) -> None:
    from ablate.seg_synth import make_seg_folder
    from test_seg_plan import seg_study

    f = write_study(tmp_path / "seg.yaml", seg_study(make_seg_folder(tmp_path / "ade")))
    first = _rows(make_plan(f))
    assert len(measured) == 1 and first == _fresh(f)
    measured.clear()
    model_costs._SHARED.clear()
    assert _rows(make_plan(f)) == first and measured == []
