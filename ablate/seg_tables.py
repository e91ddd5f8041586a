"""Table 11 whole: a study's table and its downstream study's side by side, joined row by row.

``table.beside: OTHER`` in a study file (the ImageNet half) makes ``ablate table`` render OTHER's table
(the ADE20K half) to the right of it: rows joined on the leading columns both tables share (Kernel
size, Architecture), each half's other columns under its group (ImageNet: Top-1, Params, FLOPs;
ADE20K: mIoU, Params, FLOPs), each half's paper columns kept. Each half's FLOPs header says the input
it was counted at (``ablate.flops.flops_input``): "FLOPs @224" beside "FLOPs @2048x512", as Table 11. An arm only one half has keeps '-' in
the other's columns.
"""

from __future__ import annotations

from typing import Any

from ablate.tables import MISSING, TableData, build_table


def _shared_keys(left: TableData, right: TableData) -> int:
    n = 0
    while n < min(len(left.headers), len(right.headers)) and left.headers[n] == right.headers[n] \
            and not left.groups[n] and not right.groups[n]:
        n += 1
    return n


def side_by_side(left: TableData, right: TableData, left_group: str, right_group: str) -> TableData:
    """One table: the shared key columns, then left's columns, then right's, rows joined on the keys."""
    k = _shared_keys(left, right)
    if k == 0:
        raise ValueError(f"the tables of '{left.title}' and '{right.title}' share no leading key column")
    lw, rw = len(left.headers) - k, len(right.headers) - k
    headers = left.headers[:k] + left.headers[k:] + right.headers[k:]
    groups = [""] * k + [g or left_group for g in left.groups[k:]] + [g or right_group for g in right.groups[k:]]
    right_rows = {tuple(r[:k]): (r, b, raw) for r, b, raw in zip(right.rows, right.bold, right.raw)}
    rows, bold, raw = [], [], []
    for r, b, values in zip(left.rows, left.bold, left.raw):
        other = right_rows.pop(tuple(r[:k]), None)
        rr, rb, rraw = other if other else ([MISSING] * len(right.headers), [False] * len(right.headers), {})
        rows.append(r + rr[k:])
        bold.append(b + rb[k:])
        raw.append({**{f"{left_group} {n}": v for n, v in values.items()},
                    **{f"{right_group} {n}": v for n, v in rraw.items()}})
    for key, (rr, rb, rraw) in right_rows.items():  # arms only the right half has
        rows.append(list(key) + [MISSING] * lw + rr[k:])
        bold.append([False] * (k + lw) + rb[k:])
        raw.append({f"{right_group} {n}": v for n, v in rraw.items()})
    notes = [f"{left_group}: {n}" for n in left.notes] + [f"{right_group}: {n}" for n in right.notes]
    assert all(len(r) == k + lw + rw for r in rows)
    return TableData(f"{left.title} | {right.title}", headers, rows, raw, notes, groups, bold)


def render_beside(left: Any, right: Any, fmt: str = "md") -> str:
    """``left`` (a StudyRecord whose table names ``beside``) and ``right`` (that study) as one table."""
    from ablate.tables import FORMATS, to_csv, to_html, to_latex, to_markdown

    if fmt not in FORMATS:
        raise ValueError(f"format: one of {', '.join(FORMATS)}, got '{fmt}'")
    lg = (left.spec.get("table") or {}).get("group") or "ImageNet"
    rg = (right.spec.get("table") or {}).get("group") or "ADE20K"
    table = side_by_side(build_table(left), build_table(right), lg, rg)
    return {"md": to_markdown, "csv": to_csv, "latex": to_latex, "html": to_html}[fmt](table)
