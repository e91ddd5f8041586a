"""Render a study's table from the result database, laid out by the study file's ``table`` section.

Rows are arms (trials that differ only by seed); metric cells are the mean over completed seeds,
with ± std when several seeds completed. The paper's own rows (``table.paper``) can be shown
beside the measured ones, and ``table.notes`` are printed under the table, so a discrepancy with
the paper is stated where the table is read.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

from ablate.expand import get_path
from ablate.flops import human
from ablate.store import COMPLETED, FAILED, StudyRecord, TrialRecord

FORMATS = ("md", "csv", "latex")


def max_rf(config: dict[str, Any]) -> int:
    """Maximum receptive field of one depthwise layer: (k - 1) * d + 1 (Table 12's 'Max RF')."""
    kw = config["model"].get("kwargs", {})
    k, d = kw.get("kernel_size", 3), kw.get("dilation", 1)
    if isinstance(k, list) or isinstance(d, list):
        return max((kk - 1) * dd + 1 for kk, dd in zip(k if isinstance(k, list) else [k] * len(d),
                                                       d if isinstance(d, list) else [d] * len(k)))
    return (k - 1) * d + 1


DERIVED: dict[str, Callable[[dict[str, Any]], Any]] = {"max_rf": max_rf}


@dataclass
class Arm:
    params: dict[str, Any]
    trials: list[TrialRecord]

    @property
    def done(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.status == COMPLETED]


@dataclass
class TableData:
    title: str
    headers: list[str]
    rows: list[list[str]]
    raw: list[dict[str, Any]]  # one dict per arm, unformatted, for CSV
    notes: list[str] = field(default_factory=list)


def group_arms(record: StudyRecord) -> list[Arm]:
    arms: dict[str, Arm] = {}
    for t in record.trials:
        key = json.dumps({k: v for k, v in t.params.items() if k != "seed"}, sort_keys=True)
        arms.setdefault(key, Arm({k: v for k, v in t.params.items() if k != "seed"}, [])).trials.append(t)
    return list(arms.values())


def _metric(arm: Arm, name: str) -> tuple[float | None, float | None, int]:
    vals = [t.final[name] for t in arm.done if name in t.final]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)


def _fmt(value: Any, col: dict[str, Any]) -> str:
    if value is None:
        return "–"
    if col.get("dash_if") is not None and value == col["dash_if"]:
        return "-"
    if col.get("format"):
        return col["format"].format(v=value)
    return str(value)


def _paper_row(spec: dict[str, Any], arm: Arm) -> dict[str, Any] | None:
    for row in spec.get("paper", []):
        match = row.get("match", {})
        if all(arm.params.get(k) == v or get_path(arm.trials[0].config, k) == v for k, v in match.items()):
            return row
    return None


def build_table(record: StudyRecord) -> TableData:
    spec = (record.spec.get("table") or {})
    columns = spec.get("columns") or [{"header": "Trial", "source": "trial"}, {"header": "Top-1", "source": "metric:top1"}]
    paper_keys = sorted({k for r in spec.get("paper", []) for k in r if k != "match"})
    headers = [c["header"] for c in columns] + ["Seeds"] + [f"Paper {k}" for k in paper_keys]
    rows, raw = [], []
    for arm in group_arms(record):
        first = arm.trials[0]
        cells, values = [], {}
        for col in columns:
            src = col["source"]
            if src.startswith("metric:"):
                mean, std, n = _metric(arm, src.split(":", 1)[1])
                values[col["header"]] = mean
                values[col["header"] + " std"] = std
                cells.append("–" if mean is None else f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else ""))
            elif src == "params":
                values[col["header"]] = first.n_params
                cells.append(human(first.n_params) if first.n_params else "–")
            elif src == "flops":
                values[col["header"]] = first.flops
                cells.append(human(first.flops) if first.flops else "–")
            elif src.startswith("derived:"):
                v = DERIVED[src.split(":", 1)[1]](first.config)
                values[col["header"]] = v
                cells.append(_fmt(v, col))
            elif src == "trial":
                v = ", ".join(f"{k}={json.dumps(x)}" for k, x in arm.params.items()) or first.trial_id
                values[col["header"]] = v
                cells.append(v)
            else:
                try:
                    v = get_path(first.config, src)
                except KeyError:
                    v = None
                values[col["header"]] = v
                cells.append(_fmt(v, col))
        n_done = len(arm.done)
        cells.append(f"{n_done}/{len(arm.trials)}")
        paper = _paper_row(spec, arm) or {}
        cells += [str(paper.get(k, "–")) for k in paper_keys]
        values.update({"seeds_completed": n_done, "seeds": len(arm.trials),
                       "trial_ids": " ".join(t.trial_id for t in arm.trials)})
        values.update({f"paper_{k}": paper.get(k) for k in paper_keys})
        rows.append(cells)
        raw.append(values)

    notes = list(spec.get("notes", []))
    total = len(record.trials)
    done = sum(t.status == COMPLETED for t in record.trials)
    failed = sum(t.status == FAILED for t in record.trials)
    if done < total:
        notes.append(f"Incomplete: {done} of {total} trials completed, {failed} failed, "
                     f"{total - done - failed} not run or running. Rerun the study to finish them.")
    profile = record.spec.get("profile")
    title = record.name + (f" (profile: {profile})" if profile else "")
    return TableData(title, headers, rows, raw, notes)


def to_markdown(t: TableData) -> str:
    lines = [f"**{t.title}**", "", "| " + " | ".join(t.headers) + " |", "|" + "---|" * len(t.headers)]
    lines += ["| " + " | ".join(r) + " |" for r in t.rows]
    if t.notes:
        lines.append("")
        lines += [f"{i}. {n}" for i, n in enumerate(t.notes, 1)]
    return "\n".join(lines) + "\n"


def to_csv(t: TableData) -> str:
    buf = io.StringIO()
    keys: list[str] = []
    for r in t.raw:
        keys += [k for k in r if k not in keys]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(t.raw)
    return buf.getvalue()


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "±": r"$\pm$", "×": r"$\times$", "–": "--"}


def latex_escape(s: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in s)


def to_latex(t: TableData) -> str:
    """A booktabs table, ready to paste into a paper."""
    out = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{" + "l" * len(t.headers) + "}", r"\toprule",
           " & ".join(latex_escape(h) for h in t.headers) + r" \\", r"\midrule"]
    out += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in t.rows]
    out += [r"\bottomrule", r"\end{tabular}", r"\caption{" + latex_escape(t.title) + "}"]
    if t.notes:
        out.append(r"\par\footnotesize " + " ".join(f"({i}) {latex_escape(n)}" for i, n in enumerate(t.notes, 1)))
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def render(record: StudyRecord, fmt: str = "md") -> str:
    table = build_table(record)
    return {"md": to_markdown, "csv": to_csv, "latex": to_latex}[fmt](table)
