"""Tables of analyses from the database: ``ablate table STUDY --analysis erf`` prints Table 10's
layout (rows = arms, columns = thresholds t, r in percent of the map's area), the paper's numbers
beside each value when the study's ``analyses.erf.rows`` give them.

An arm is the trials that differ only by seed; its cell is the mean over the seeds analysed, with
± std when there are several. Formats: md, csv (one row per arm, measured and paper numbers in
their own columns, with the trial ids), latex (booktabs)."""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from typing import Any

from ablate.analyses.names import ERF_IMAGES, ERF_SIZE, erf_metric, percent_text
from ablate.store_reads import COMPLETED, StudyRecord, TrialRecord
from ablate.text import markdown_cell, strip_controls

FORMATS = ("md", "csv", "latex")
ANALYSES_WITH_TABLES = ("erf",)
DEFAULT_THRESHOLDS = [0.2, 0.3, 0.5, 0.99]


class AnalysisTableError(ValueError):
    """The study declares no such analysis, or it has no table."""


@dataclass
class ErfRowData:
    label: str
    trial_ids: list[str]
    values: list[tuple[float | None, float | None, int]]  # per t: mean, std (None for one seed), seeds
    paper: list[float] | None
    images: float | None = None  # N actually averaged (mean over seeds)
    size: float | None = None


@dataclass
class ErfTable:
    study: str
    thresholds: list[float]
    rows: list[ErfRowData]
    notes: list[str] = field(default_factory=list)

    @property
    def headers(self) -> list[str]:
        return [f"t = {percent_text(t)}%" for t in self.thresholds]


def _matches(config: dict[str, Any], match: dict[str, Any]) -> bool:
    from ablate.expand import get_path

    try:
        return all(get_path(config, k) == v for k, v in match.items())
    except KeyError:
        return False


def _summary(values: list[float]) -> tuple[float | None, float | None, int]:
    if not values:
        return None, None, 0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values)


def erf_table(record: StudyRecord) -> ErfTable:
    """Table 10 of one study, from its stored ``erf_r*`` metrics and its file's ``analyses.erf``."""
    opts = ((record.spec or {}).get("analyses") or {}).get("erf")
    if opts is None:
        raise AnalysisTableError(f"study '{record.name}' declares no erf analysis (analyses: {{erf: ...}} in its file)")
    thresholds = list(opts.get("thresholds") or DEFAULT_THRESHOLDS)
    declared = list(opts.get("rows") or [])
    arms: dict[str, list[TrialRecord]] = {}
    for t in record.trials:
        key = json.dumps({k: v for k, v in t.params.items() if k != "seed"}, sort_keys=True)
        arms.setdefault(key, []).append(t)

    def row_of(trials: list[TrialRecord]) -> int | None:
        return next((i for i, r in enumerate(declared) if _matches(trials[0].config, r.get("match") or {})), None)

    keyed = [(row_of(ts), n, ts) for n, ts in enumerate(arms.values())]
    keyed.sort(key=lambda x: (x[0] is None, x[0] if x[0] is not None else 0, x[1]))  # declared rows first, in order
    rows = []
    for idx, _, trials in keyed:
        done = [t for t in trials if t.status == COMPLETED]
        spec = declared[idx] if idx is not None else {}
        label = spec.get("label") or " ".join(f"{k.split('.')[-1]}={json.dumps(v)}" for k, v in trials[0].params.items()
                                              if k != "seed") or record.name
        values = [_summary([t.final[erf_metric(th)] for t in done if erf_metric(th) in t.final]) for th in thresholds]
        imgs = [t.final[ERF_IMAGES] for t in done if ERF_IMAGES in t.final]
        sizes = [t.final[ERF_SIZE] for t in done if ERF_SIZE in t.final]
        rows.append(ErfRowData(label, [t.trial_id for t in trials], values, spec.get("paper"),
                               statistics.fmean(imgs) if imgs else None, statistics.fmean(sizes) if sizes else None))
    n, s = opts.get("images", 50), opts.get("size", 1024)
    where = "after" if opts.get("final_norm") else "before"
    notes = [f"r: the area of the smallest centred square holding more than t of log10(A + 1) / max, in % of the "
             f"{s}x{s} map; A averaged over the first {n} images of the {opts.get('split', 'val')} split; the last "
             f"feature map {where} the final norm (Appendix B; docs/analyses.md)."]
    short = sorted({f"{r.label}: {r.images:g}" for r in rows if r.images is not None and r.images < n})
    if short:
        notes.append(f"fewer images than {n} were averaged (the split is smaller or maps were NaN): {'; '.join(short)}")
    if any(r.paper for r in rows):
        notes.append("(paper: …) is Table 10 of the paper (ImageNet, 1024x1024, N = 50).")
    missing = [r.label for r in rows if all(v[0] is None for v in r.values)]
    if missing:
        notes.append(f"not analysed yet: {', '.join(missing)} (`ablate analyze STUDY_FILE`)")
    return ErfTable(record.name, thresholds, rows, notes)


def _cell(v: tuple[float | None, float | None, int], paper: float | None) -> str:
    mean, std, _ = v
    text = "–" if mean is None else f"{mean:.1f}%" + (f" ± {std:.1f}" if std is not None else "")
    return text + (f" (paper {paper:.1f}%)" if paper is not None else "")


def to_markdown(t: ErfTable) -> str:
    lines = [f"**Table 10 ({markdown_cell(t.study)}): high-contribution area ratio r**", "",
             "| Model | " + " | ".join(t.headers) + " |", "|---|" + "---:|" * len(t.headers)]
    for r in t.rows:
        cells = [_cell(v, r.paper[i] if r.paper else None) for i, v in enumerate(r.values)]
        lines.append("| " + " | ".join([markdown_cell(r.label)] + cells) + " |")
    for n in t.notes:  # one paragraph each
        lines += ["", markdown_cell(n)]
    return "\n".join(lines) + "\n"


def to_csv(t: ErfTable) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    names = [erf_metric(th) for th in t.thresholds]
    w.writerow(["model", *names, *(f"{n}_std" for n in names), *(f"paper_{n}" for n in names), "seeds",
                "images", "size", "trials"])
    for r in t.rows:
        w.writerow([strip_controls(r.label, keep_newlines=False),
                    *("" if v[0] is None else f"{v[0]:.6g}" for v in r.values),
                    *("" if v[1] is None else f"{v[1]:.6g}" for v in r.values),
                    *((f"{p:g}" for p in r.paper) if r.paper else [""] * len(names)),
                    max((v[2] for v in r.values), default=0), "" if r.images is None else f"{r.images:g}",
                    "" if r.size is None else f"{r.size:g}", " ".join(r.trial_ids)])
    return buf.getvalue()


_LATEX = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
          "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def _tex(s: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in strip_controls(s, keep_newlines=False))


def to_latex(t: ErfTable) -> str:
    out = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "c" * len(t.headers) + "}", r"\toprule",
           " & ".join(["Model"] + [f"$t = {percent_text(th)}\\%$" for th in t.thresholds]) + r" \\", r"\midrule"]
    for r in t.rows:
        cells = [_tex(_cell(v, r.paper[i] if r.paper else None)) for i, v in enumerate(r.values)]
        out.append(" & ".join([_tex(r.label)] + cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}",
            r"\caption{" + _tex(f"{t.study}: high-contribution area ratio r (Table 10). " + " ".join(t.notes)) + "}",
            r"\end{table}"]
    return "\n".join(out) + "\n"


def render_analysis(record: StudyRecord, analysis: str, fmt: str = "md") -> str:
    """The table of ``analysis`` for a study, in ``fmt`` (md, csv, latex)."""
    if analysis not in ANALYSES_WITH_TABLES:
        raise AnalysisTableError(f"--analysis: one of {', '.join(ANALYSES_WITH_TABLES)}, got '{analysis}'")
    if fmt not in FORMATS:
        raise AnalysisTableError(f"--format: one of {', '.join(FORMATS)} with --analysis, got '{fmt}'")
    table = erf_table(record)
    return {"md": to_markdown, "csv": to_csv, "latex": to_latex}[fmt](table)
