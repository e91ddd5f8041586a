"""Render a study's table from the result database, laid out by the study file's ``table`` section.

Rows are arms (trials that differ only by seed); metric cells are the mean over completed seeds,
with ± std when several seeds completed, and the Seeds column says how many completed. With a
``table.baseline``, the study's metric gets a Δ column (arm mean - baseline mean) and a paired
comparison with the baseline over shared seeds (ablate.stats: paired t-test from 3 seeds, Holm across
the arms). Every Δ carries a mark, explained in the notes: ∗ significant, † not significant, "(n<3)"
too few shared seeds to test. The best arm of a metric column is in bold. Columns with
a ``group`` get a grouped header (Table 11's ImageNet / ADE20K). The paper's own rows
(``table.paper``) are shown beside the measured ones, and ``table.notes`` are printed under the table,
so a discrepancy with the paper is stated where the table is read.

Formats: md, latex (booktabs), csv (one row per arm with the trial ids behind each cell), html.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from ablate.expand import get_path
from ablate.flops import human
from ablate.stats import ALPHA, MIN_PAIRS, Paired, Summary, compare_with_baseline, summarize
from ablate.store import COMPLETED, FAILED, INTERRUPTED, StudyRecord, TrialRecord
from ablate.text import markdown_cell, safe_format, strip_controls

FORMATS = ("md", "csv", "latex", "html")
# the mark after each Δ: one for each outcome of the comparison with the baseline (ablate.stats)
SIGNIFICANT = "∗"  # U+2217, not "*": Markdown would read an asterisk as emphasis
DAGGER = "†"  # tested, not significant
UNTESTED = f" (n<{MIN_PAIRS})"  # too few shared seeds to test
MISSING = "–"


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

    def by_seed(self, metric: str) -> dict[int, float]:
        """{seed: final value} of ``metric`` over completed trials."""
        return {t.seed: t.final[metric] for t in self.done if metric in t.final}


@dataclass
class TableData:
    title: str
    headers: list[str]
    rows: list[list[str]]  # plain text cells (markup is added per format)
    raw: list[dict[str, Any]]  # one dict per arm, unformatted, for CSV
    notes: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # per column, "" when ungrouped
    bold: list[list[bool]] = field(default_factory=list)  # per cell: the best value of its column

    def __post_init__(self) -> None:
        if not self.groups:
            self.groups = [""] * len(self.headers)
        if not self.bold:
            self.bold = [[False] * len(r) for r in self.rows]


def group_arms(record: StudyRecord) -> list[Arm]:
    arms: dict[str, Arm] = {}
    for t in record.trials:
        key = json.dumps({k: v for k, v in t.params.items() if k != "seed"}, sort_keys=True)
        arms.setdefault(key, Arm({k: v for k, v in t.params.items() if k != "seed"}, [])).trials.append(t)
    return list(arms.values())


def _metric(arm: Arm, name: str) -> tuple[float | None, float | None, int]:
    s = summarize(arm.by_seed(name).values())
    return s.mean, s.std, s.n


_NO_LABEL = object()


def _label(value: Any, col: dict[str, Any]) -> Any:
    """The column's label for ``value`` (keys match the value, its str or its JSON: 3, "3", null)."""
    labels = col.get("labels") or {}
    for key in (value, str(value), json.dumps(value)):
        try:
            if key in labels:
                return labels[key]
        except TypeError:  # unhashable value
            break
    return _NO_LABEL


def _fmt_scalar(value: Any, fmt: str | None) -> str:
    if fmt == "human":
        return human(value) if isinstance(value, (int, float)) else str(value)
    # a format read from the database may be one no plan checked: safe_format never raises or allocates
    return safe_format(fmt, value, "{v:g}" if isinstance(value, float) else "{v}")


def _fmt(value: Any, col: dict[str, Any]) -> str:
    label = _label(value, col)
    if label is not _NO_LABEL:
        return str(label)
    if value is None:
        return MISSING
    if col.get("dash_if") is not None and value == col["dash_if"]:
        return "-"
    if isinstance(value, list):  # per-stage values, e.g. kernel sizes 31-29-27-13
        return "-".join(_fmt_scalar(v, col.get("format")) for v in value)
    return _fmt_scalar(value, col.get("format"))


def _fmt_metric(s: Summary, col: dict[str, Any]) -> str:
    if s.mean is None:
        return MISSING
    fmt = col.get("format")
    if fmt == "human":
        return human(s.mean)
    one = (lambda v: safe_format(fmt, v, "{v:.2f}"))
    return one(s.mean) + (f" ± {one(s.std)}" if s.std is not None else "")


def _matches(match: dict[str, Any], arm: Arm) -> bool:
    def value(k: str) -> Any:
        if k in arm.params:
            return arm.params[k]
        try:
            return get_path(arm.trials[0].config, k)
        except KeyError:
            return KeyError

    return all(value(k) == v for k, v in match.items())


def _paper_row(spec: dict[str, Any], arm: Arm) -> dict[str, Any] | None:
    for row in spec.get("paper", []):
        if _matches(row.get("match", {}), arm):
            return row
    return None


def find_baseline(spec: dict[str, Any], arms: list[Arm]) -> Arm | None:
    """The arm matching ``table.baseline`` (config paths -> values), or None."""
    base = spec.get("baseline")
    if not base:
        return None
    return next((a for a in arms if _matches(base, a)), None)


def _best(vals: list[float], mode: str) -> float | None:
    """The best of a column's values, or None when nothing should be bold (fewer than 2 values)."""
    if len(vals) < 2 or mode not in ("max", "min"):
        return None
    return max(vals) if mode == "max" else min(vals)


def _is_best(v: float | None, best: float | None) -> bool:
    return v is not None and best is not None and math.isclose(v, best, rel_tol=1e-12, abs_tol=1e-15)


@dataclass
class _Column:
    header: str
    group: str
    cells: list[str]
    raw: list[dict[str, Any]]
    numbers: list[float | None] = field(default_factory=list)  # for bold
    best: str = "none"


def _config_value(arm: Arm, src: str) -> Any:
    try:
        return get_path(arm.trials[0].config, src)
    except KeyError:
        return None


def build_table(record: StudyRecord, alpha: float = ALPHA) -> TableData:
    spec = (record.spec.get("table") or {})
    columns = spec.get("columns") or [{"header": "Trial", "source": "trial"}, {"header": "Top-1", "source": "metric:top1"}]
    main = (record.spec.get("metric") or {}).get("name", "top1")
    main_mode = (record.spec.get("metric") or {}).get("mode", "max")
    arms = group_arms(record)
    baseline = find_baseline(spec, arms)
    notes = list(spec.get("notes", []))
    if spec.get("baseline") and baseline is None and arms:
        notes.append(f"Baseline {json.dumps(spec['baseline'])} matches no arm in the results; no Δ column.")

    cols: list[_Column] = []
    marks_used: set[str] = set()
    tested: list[Paired] = []
    for col in columns:
        src, head, group = col["source"], col["header"], col.get("group") or ""
        c = _Column(head, group, [], [{} for _ in arms])
        cols.append(c)
        if src.startswith("metric:"):
            name = src.split(":", 1)[1]
            c.best = col.get("best") or (main_mode if name == main else "none")
            want_delta = col.get("delta") if col.get("delta") is not None else name == main
            base_seeds = baseline.by_seed(name) if baseline else {}
            base_mean = summarize(base_seeds.values()).mean
            d = _Column(f"Δ {head}", group, [], [{} for _ in arms]) if (want_delta and baseline) else None
            for i, arm in enumerate(arms):
                seeds = arm.by_seed(name)
                s = summarize(seeds.values())
                c.cells.append(_fmt_metric(s, col))
                c.numbers.append(s.mean)
                ids = [t.trial_id for t in arm.done if name in t.final]
                c.raw[i].update({head: s.mean, f"{head} std": s.std, f"{head} n": s.n, f"{head} trials": " ".join(ids)})
            if d is None:
                continue
            # the arms compared with the baseline in this column are one family (Holm)
            compared = [i for i, arm in enumerate(arms)
                        if arm is not baseline and c.numbers[i] is not None and base_mean is not None]
            results = dict(zip(compared, compare_with_baseline(base_seeds, [arms[i].by_seed(name) for i in compared],
                                                               alpha)))
            for i, arm in enumerate(arms):
                if arm is baseline:
                    d.cells.append("baseline")
                    continue
                if i not in results:
                    d.cells.append(MISSING)
                    continue
                p: Paired = results[i]
                delta = c.numbers[i] - base_mean
                mark = {True: SIGNIFICANT, False: DAGGER, None: UNTESTED}[p.significant]
                marks_used.add(mark)
                if p.method != "none":
                    tested.append(p)
                d.cells.append(f"{delta:+.2f}{mark}")
                d.raw[i].update({f"Δ {head}": delta, f"Δ {head} test": p.method, f"Δ {head} pairs": p.n,
                                 f"Δ {head} p": p.p_value, f"Δ {head} p_holm": p.p_adjusted,
                                 f"Δ {head} ci_low": p.low, f"Δ {head} ci_high": p.high,
                                 f"Δ {head} significant": p.significant})
            cols.append(d)
        else:
            c.best = col.get("best") or "none"
            for i, arm in enumerate(arms):
                first = arm.trials[0]
                if src in ("params", "flops"):
                    v = first.n_params if src == "params" else first.flops
                    text = _fmt(v, {**col, "format": col.get("format") or "human"}) if v else MISSING
                elif src.startswith("derived:"):
                    fn = DERIVED.get(src.split(":", 1)[1])
                    try:
                        v = fn(first.config) if fn else None
                    except (KeyError, TypeError, ValueError):
                        v = None
                    text = _fmt(v, col)
                elif src == "trial":
                    v = ", ".join(f"{k}={json.dumps(x)}" for k, x in arm.params.items()) or first.trial_id
                    text = v
                else:
                    v = _config_value(arm, src)
                    text = _fmt(v, col)
                c.cells.append(text)
                c.numbers.append(v if isinstance(v, (int, float)) and not isinstance(v, bool) else None)
                c.raw[i][head] = v

    paper_keys = sorted({k for r in spec.get("paper", []) for k in r if k != "match"})
    headers = [c.header for c in cols] + ["Seeds"] + [f"Paper {k}" for k in paper_keys]
    groups = [c.group for c in cols] + [""] * (1 + len(paper_keys))
    bests = [_best([v for v in c.numbers if v is not None], c.best) for c in cols]
    rows, bold, raw = [], [], []
    for i, arm in enumerate(arms):
        cells = [c.cells[i] for c in cols]
        marks = [bool(c.numbers) and _is_best(c.numbers[i], b) for c, b in zip(cols, bests)]
        n_done = len(arm.done)
        cells.append(f"{n_done}/{len(arm.trials)}")
        paper = _paper_row(spec, arm) or {}
        cells += [str(paper.get(k, MISSING)) for k in paper_keys]
        marks += [False] * (1 + len(paper_keys))
        values: dict[str, Any] = {f"param {k}": (json.dumps(v) if isinstance(v, (list, dict)) else v)
                                  for k, v in arm.params.items()}
        for c in cols:
            values.update(c.raw[i])
        values.update({"seeds_completed": n_done, "seeds": len(arm.trials),
                       "trial_ids": " ".join(t.trial_id for t in arm.trials),
                       "baseline": arm is baseline})
        values.update({f"paper_{k}": paper.get(k) for k in paper_keys})
        rows.append(cells)
        bold.append(marks)
        raw.append(values)

    notes += significance_notes(marks_used, tested, alpha)
    notes += _incomplete_notes(record.trials)
    profile = record.spec.get("profile")
    title = record.name + (f" (profile: {profile})" if profile else "")
    return TableData(title, headers, rows, raw, notes, groups, bold)


def significance_notes(marks: set[str], tested: list[Paired], alpha: float) -> list[str]:
    """The notes that say how Δ was tested and what each mark that appears in the table means."""
    if not marks:
        return []
    notes = ["Δ is the arm's mean minus the baseline's."]
    if tested:
        ns = sorted({p.n for p in tested})
        n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
        m = "/".join(str(f) for f in sorted({p.family for p in tested}))  # one family per Δ column
        notes[0] += (f" Test: two-sided paired t-test over the seeds an arm shares with the baseline "
                     f"(scipy.stats.ttest_rel, n = {n} pairs), p-values Holm-adjusted across the arms compared "
                     f"with the baseline (m = {m}), family-wise α = {alpha:g}; the CSV has each arm's p, p_holm and "
                     f"unadjusted {1 - alpha:.0%} CI of the mean per-seed difference.")
    if SIGNIFICANT in marks:
        notes.append(f"{SIGNIFICANT} Significantly different from the baseline: Holm-adjusted p ≤ {alpha:g}.")
    if DAGGER in marks:
        notes.append(f"{DAGGER} Not significantly different from the baseline: Holm-adjusted p > {alpha:g} "
                     "(no difference shown with these seeds, which is not evidence that there is none).")
    if UNTESTED in marks:
        notes.append(f"{UNTESTED.strip()}: not tested, fewer than {MIN_PAIRS} seeds shared with the baseline "
                     "(too few for a t-test to mean much); neither significant nor not.")
    return notes


def _incomplete_notes(trials: list[TrialRecord]) -> list[str]:
    """What is missing and what to do about it: interrupted and transient failures resume on a
    rerun; a failure that will recur (the config) needs the study fixed, not a rerun."""
    total = len(trials)
    count = {s: sum(t.status == s for t in trials) for s in (COMPLETED, FAILED, INTERRUPTED)}
    recurring = sum(t.status == FAILED and getattr(t, "error_kind", None) == "recurring" for t in trials)
    if count[COMPLETED] == total:
        return []
    parts = [f"{count[COMPLETED]} of {total} trials completed"]
    if count[INTERRUPTED]:
        parts.append(f"{count[INTERRUPTED]} interrupted")
    if count[FAILED]:
        parts.append(f"{count[FAILED]} failed" + (f" ({recurring} will fail again: fix the study)" if recurring else ""))
    rest = total - sum(count.values())
    if rest:
        parts.append(f"{rest} not run or running")
    todo = "`ablate run` again resumes the others from their last epoch" if recurring else \
        "`ablate run` again resumes them from their last epoch"
    return [f"Incomplete: {', '.join(parts)}. {todo}; `ablate show TRIAL` gives each one's error."]


# -- formats -----------------------------------------------------------------------------------
def _spans(groups: list[str]) -> list[tuple[str, int, int]]:
    """Runs of equal group names: (name, first column, count)."""
    out: list[tuple[str, int, int]] = []
    for i, g in enumerate(groups):
        if out and out[-1][0] == g and g:
            out[-1] = (g, out[-1][1], out[-1][2] + 1)
        else:
            out.append((g, i, 1))
    return out


def to_markdown(t: TableData) -> str:
    """GitHub Markdown. Every text from the study file or the database is escaped (``markdown_cell``):
    HTML shows as text, a pipe or line break cannot split a row, no terminal control sequences."""
    def cell(s: str, b: bool) -> str:
        s = markdown_cell(s)
        return f"**{s}**" if b else s

    heads = [markdown_cell(f"{g} {h}" if g else h) for g, h in zip(t.groups, t.headers)]
    lines = [f"**{markdown_cell(t.title)}**", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(cell(c, b) for c, b in zip(r, bs)) + " |" for r, bs in zip(t.rows, t.bold)]
    if t.notes:
        lines.append("")
        lines += [f"{i}. {markdown_cell(n)}" for i, n in enumerate(t.notes, 1)]
    return "\n".join(lines) + "\n"


def to_csv(t: TableData) -> str:
    buf = io.StringIO()
    keys: list[str] = []
    for r in t.raw:
        keys += [k for k in r if k not in keys]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    # values stay exact, but no terminal control sequence reaches a terminal the CSV is printed to
    w.writerows(t.raw)
    return strip_controls(buf.getvalue())


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "±": r"$\pm$", "×": r"$\times$", "–": "--", "Δ": r"$\Delta$", DAGGER: r"$^\dagger$",
                  SIGNIFICANT: r"$^{*}$", "α": r"$\alpha$", "≤": r"$\leq$", "<": r"$<$", ">": r"$>$"}


def latex_escape(s: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in strip_controls(s, keep_newlines=False))


def to_latex(t: TableData) -> str:
    """A booktabs table, ready to paste into a paper (grouped headers via multicolumn/cmidrule)."""
    n = len(t.headers)
    out = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{" + "l" + "c" * (n - 1) + "}", r"\toprule"]
    if any(t.groups):
        spans = _spans(t.groups)
        parts: list[str] = []
        for g, _, k in spans:
            parts += [r"\multicolumn{%d}{c}{%s}" % (k, latex_escape(g))] if g else [""] * k
        out.append(" & ".join(parts) + r" \\")
        out.append(" ".join(r"\cmidrule(lr){%d-%d}" % (a + 1, a + k) for g, a, k in spans if g))
    out += [" & ".join(latex_escape(h) for h in t.headers) + r" \\", r"\midrule"]
    out += [" & ".join(r"\textbf{" + latex_escape(c) + "}" if b else latex_escape(c) for c, b in zip(r, bs)) + r" \\"
            for r, bs in zip(t.rows, t.bold)]
    out += [r"\bottomrule", r"\end{tabular}", r"\caption{" + latex_escape(t.title) + "}"]
    if t.notes:
        out.append(r"\par\footnotesize " + " ".join(f"({i}) {latex_escape(n)}" for i, n in enumerate(t.notes, 1)))
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def to_html_fragment(t: TableData) -> str:
    """The table as an HTML element (no page around it): used by ``to_html`` and the dashboard."""
    def e(s: str) -> str:  # escaped, and without control sequences for a terminal it may be printed to
        return html.escape(strip_controls(s))

    out = ['<table class="ablate-table">', f"<caption>{e(t.title)}</caption>", "<thead>"]
    if any(t.groups):
        out.append("<tr>" + "".join(f'<th colspan="{k}" class="group">{e(g)}</th>' if g else
                                     f'<th colspan="{k}"></th>' for g, _, k in _spans(t.groups)) + "</tr>")
    out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in t.headers) + "</tr>")
    out.append("</thead>")
    out.append("<tbody>")
    for r, bs in zip(t.rows, t.bold):
        out.append("<tr>" + "".join(f"<td><b>{e(c)}</b></td>" if b else f"<td>{e(c)}</td>" for c, b in zip(r, bs))
                   + "</tr>")
    out.append("</tbody></table>")
    if t.notes:
        out.append('<ol class="ablate-notes">' + "".join(f"<li>{e(n)}</li>" for n in t.notes) + "</ol>")
    return "\n".join(out)


TABLE_CSS = """
table.ablate-table { border-collapse: collapse; font: 14px/1.4 system-ui, sans-serif; margin: 8px 0; }
table.ablate-table caption { font-weight: 600; text-align: left; padding: 4px 0; }
table.ablate-table th, table.ablate-table td { padding: 3px 10px; text-align: center; white-space: nowrap; }
table.ablate-table thead tr:last-child th { border-bottom: 1px solid #333; }
table.ablate-table thead { border-top: 2px solid #333; }
table.ablate-table tbody { border-bottom: 2px solid #333; }
table.ablate-table th.group { border-bottom: 1px solid #999; }
table.ablate-table td:first-child, table.ablate-table th:first-child { text-align: left; }
ol.ablate-notes { font: 12px/1.4 system-ui, sans-serif; color: #444; max-width: 60em; }
"""


def to_html(t: TableData) -> str:
    """A standalone HTML page with the table."""
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(strip_controls(t.title))}</title><style>{TABLE_CSS}</style></head><body>\n"
            + to_html_fragment(t) + "\n</body></html>\n")


def render(record: StudyRecord, fmt: str = "md") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format: one of {', '.join(FORMATS)}, got '{fmt}'")
    table = build_table(record)
    return {"md": to_markdown, "csv": to_csv, "latex": to_latex, "html": to_html}[fmt](table)
