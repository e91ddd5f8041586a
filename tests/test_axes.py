"""ablate.axes: a table reads the axes a study stored without the study schema (pydantic), and
gets exactly the arms the schema-validated axes give (ablate.expand's order); a stored dict of
another shape still goes through the schema, with its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ablate.axes import assignments, excluded, stored_axes
from ablate.study import AxesSpec, load_study
from ablate.tables import declared_arms

STUDIES = sorted((Path(__file__).resolve().parent.parent / "studies").glob("*.yaml"))


def _validated_arms(axes: dict) -> list[dict]:
    spec = AxesSpec.model_validate(axes)
    return [a for a in assignments(spec) if not excluded(a, spec)]


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_stored_axes_of_every_study_file_give_the_validated_arms(path: Path) -> None:
    stored = load_study(path).model_dump(mode="json")  # what `ablate run` stores
    assert stored_axes(stored["axes"]) is not None
    assert declared_arms(stored) == _validated_arms(stored["axes"])


def test_grid_zip_exclude_in_order() -> None:
    axes = {"grid": {"a": [1, 2], "b": ["x", "y"]}, "zip": [{"k": [3, 5], "d": [1, 2]}],
            "exclude": [{"a": 2, "b": "y"}]}
    arms = declared_arms({"axes": axes})
    assert arms == _validated_arms(axes)
    assert len(arms) == 6 and arms[0] == {"a": 1, "b": "x", "k": 3, "d": 1}
    assert {"a": 2, "b": "y", "k": 3, "d": 1} not in arms


@pytest.mark.parametrize("axes", [{"grid": {"a": []}}, {"zip": [{"a": [1], "b": [1, 2]}]}, {"grid": [1]},
                                  {"grid": {"a": [1]}, "other": 1}, {"exclude": [1]}])
def test_other_shapes_go_through_the_schema(axes: dict) -> None:
    assert stored_axes(axes) is None
    with pytest.raises(ValidationError):
        declared_arms({"axes": axes})
    with pytest.raises(ValidationError):
        AxesSpec.model_validate(axes)
