"""The arms a study's axes give (grid x zipped groups, minus exclusions) and config paths, on plain
values: what ``ablate.expand`` does with a validated study, and what a table does with the axes a
study stored, without importing the study schema (pydantic models cost a command typed at a prompt
more than the table itself)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any


def get_path(config: dict[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def set_path(config: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def assignments(axes: Any) -> list[dict[str, Any]]:
    """Every assignment of axis values, in order: the grid's product, each zipped group varying
    together (``axes`` has ``grid``, ``zip`` and ``exclude``, as ``study.AxesSpec``)."""
    blocks: list[list[dict[str, Any]]] = [[{k: v} for v in vals] for k, vals in axes.grid.items()]
    for group in axes.zip:
        keys = list(group)
        blocks.append([dict(zip(keys, vals)) for vals in zip(*group.values())])
    out = []
    for combo in itertools.product(*blocks):
        merged: dict[str, Any] = {}
        for part in combo:
            merged.update(part)
        out.append(merged)
    return out


def excluded(assign: dict[str, Any], axes: Any) -> bool:
    return any(all(assign.get(k) == v for k, v in ex.items()) for ex in axes.exclude)


def stored_axes(axes: dict[str, Any]) -> SimpleNamespace | None:
    """The axes of a stored study spec as ``AxesSpec`` holds them, when the dict already has the
    shape a validated study dumps (grid of non-empty lists, zipped groups of equal non-empty
    lengths, exclusions as dicts); None otherwise, for the caller to validate with the schema."""
    if not set(axes) <= {"grid", "zip", "exclude"}:
        return None
    grid, groups, exclude = axes.get("grid", {}), axes.get("zip", []), axes.get("exclude", [])
    if not (isinstance(grid, dict) and isinstance(groups, list) and isinstance(exclude, list)):
        return None
    if not all(isinstance(k, str) and isinstance(v, list) and v for k, v in grid.items()):
        return None
    for g in groups:
        if not (isinstance(g, dict) and g and all(isinstance(k, str) and isinstance(v, list) for k, v in g.items())
                and len({len(v) for v in g.values()}) == 1 and 0 not in {len(v) for v in g.values()}):
            return None
    if not all(isinstance(e, dict) and all(isinstance(k, str) for k in e) for e in exclude):
        return None
    return SimpleNamespace(grid=grid, zip=groups, exclude=exclude)
