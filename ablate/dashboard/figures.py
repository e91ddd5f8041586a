"""The dashboard's plots as plain plotly figure dicts (no validation cost, JSON-ready), chosen from
what varies in a study:

* ``arms``: every arm's Δ against the baseline with its paired-t confidence interval (the picture
  of the table; filled: significant after Holm, open: not, grey without a bar: n<3, untested), or
  each arm's mean with a 95% t interval when the study has no baseline;
* ``axis:<path>``: the metric against each declared axis that varies;
* ``grid``: a heatmap of the metric when two varying axes form a grid;
* ``params`` / ``flops``: against model size, only when it varies; ``kernel``: against the kernel
  size when it varies without being an axis (a ``model.name`` axis);
* ``curves:<metric>``: per-epoch curves of a bounded sample of arms (mean over seeds, optional
  ±1 std bands; epochs counted from 1, integer ticks);
* ``erf``: Table 10's ratios r at each threshold from ``erf_r<t>`` metrics (a study that declares
  ``analyses.erf`` gets Table 10 itself instead);
* ``erf_maps``, ``kernel_maps``, ``shape_bias``: the appendix analyses' figures (``appendix.py``:
  Figures 1, 6 and 5 from the arrays and metrics ``ablate analyze`` stores).

Every figure's size is bounded whatever the number of trials: at most ``MAX_DOTS`` arms in the dot
plot, ``MAX_POINTS`` arm points per axis plot (beyond: the axis' marginal), ``MAX_CURVES`` arms in
the curves.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from ablate.store_reads import COMPLETED, FAILED, INTERRUPTED, PENDING, RUNNING, StudyRecord

from ablate.dashboard.palette import STATUS_COLORS, STATUSES
from ablate.dashboard.view import ArmView, StudyView, escape, value_key, value_text

MAX_CURVES = 12  # arms in the per-epoch curves: the baseline and the best
MAX_DOTS = 30  # arms in the dot plot (the baseline and the best)
MAX_POINTS = 120  # arm points in an axis or size plot; beyond, the marginal (mean, range, best over arms per x)
MAX_GRID = 100  # values per axis of the heatmap (values written in cells up to 400 cells)
MAX_GROUPS = 10  # lines in an axis plot, one per value of the other varying axis
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#637939"]
ERF_RE = re.compile(r"^erf_r(\d+)$")
NOT_CURVES = ("epoch", "lr")  # per-epoch values that are settings, not results


def pretty(metric: str) -> str:
    return {"top1": "Top-1 (%)", "top5": "Top-5 (%)", "val_loss": "validation loss", "train_loss": "training loss",
            "miou": "mIoU"}.get(metric, metric)


def layout(title: str, x: str, y: str, **extra: Any) -> dict[str, Any]:
    lay = {"title": {"text": title, "x": 0.02, "font": {"size": 15}}, "height": 380,
           "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
           "xaxis": {"title": {"text": x}, "zeroline": False, "automargin": True},
           "yaxis": {"title": {"text": y}, "zeroline": False, "automargin": True},
           "legend": {"font": {"size": 11}}, "hovermode": "closest"}
    lay.update(extra)
    return lay


def rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _std(a: ArmView) -> float:
    return a.std or 0.0


# -- the arms against the baseline ----------------------------------------------------------------
def dot_arms(view: StudyView) -> list[ArmView]:
    """The arms of the dot plot, in table order: all, or the baseline and the best beyond MAX_DOTS."""
    have = [a for a in view.arms if a.mean is not None]
    if len(have) <= MAX_DOTS:
        return have
    keep = {a.index for a in view.best_first()[:MAX_DOTS - (view.baseline is not None)]}
    if view.baseline is not None:
        keep.add(view.baseline.index)
    return [a for a in have if a.index in keep]


def arms_figure(view: StudyView) -> dict[str, Any] | None:
    """Δ of every arm against the baseline with its confidence interval, one row per arm (the
    table's picture); without a baseline, each arm's mean with a 95% t interval over seeds."""
    from ablate import tdist

    arms = dot_arms(view)
    if not arms:
        return None
    shown = f" ({len(arms)} of {sum(a.mean is not None for a in view.arms)} arms: the best)" \
        if len(arms) < sum(a.mean is not None for a in view.arms) else ""
    labels = [escape(a.label) for a in arms]
    base = view.baseline
    traces: list[dict[str, Any]] = []
    if base is not None and base.mean is not None:
        groups = {"significant": ([], "circle", "#d62728"), "not significant": ([], "circle-open", "#1f77b4"),
                  "n<3 (untested)": ([], "diamond-open", "#9e9e9e"), "baseline": ([], "square", "#263238")}
        for a, lab in zip(arms, labels):
            if a.is_baseline:
                groups["baseline"][0].append((a, lab, 0.0, None, None, "baseline"))
                continue
            p = a.compare
            d = a.mean - base.mean  # type: ignore[operator]
            if p is None or p.significant is None:
                groups["n<3 (untested)"][0].append((a, lab, d, None, None, f"n={p.n if p else 0} paired seeds: untested"))
            else:
                key = "significant" if p.significant else "not significant"
                groups[key][0].append((a, lab, d, p.low, p.high, f"p={p.p_value:.3g}, Holm p={p.p_adjusted:.3g}, "
                                                                   f"n={p.n}, {p.confidence:.0%} CI "
                                                                   f"[{p.low:+.3g}, {p.high:+.3g}]"))
        for name, (pts, symbol, color) in groups.items():
            if not pts:
                continue
            tr = {"type": "scatter", "mode": "markers", "name": name, "y": [p[1] for p in pts], "x": [p[2] for p in pts],
                  "customdata": [[p[0].index, p[5]] for p in pts],
                  "marker": {"symbol": symbol, "size": 9, "color": color, "line": {"width": 1.5, "color": color}},
                  "hovertemplate": "%{y}<br>Δ %{x:+.4g}<br>%{customdata[1]}<extra></extra>"}
            if any(p[3] is not None for p in pts):
                tr["error_x"] = {"type": "data", "symmetric": False, "thickness": 1.2, "width": 3, "color": color,
                                 "array": [(p[4] - p[2]) if p[4] is not None else 0 for p in pts],
                                 "arrayminus": [(p[2] - p[3]) if p[3] is not None else 0 for p in pts]}
            traces.append(tr)
        title = f"Δ {pretty(view.metric)} against the baseline, {1 - view.alpha:.0%} CI (paired t, Holm){shown}"
        xtitle = f"Δ {pretty(view.metric)} (arm - baseline)"
        shapes = [{"type": "line", "xref": "x", "yref": "paper", "x0": 0, "x1": 0, "y0": 0, "y1": 1,
                   "line": {"color": "#555", "width": 1, "dash": "dot"}}]
    else:
        lo, hi = [], []
        for a in arms:
            if a.n >= 2 and a.std is not None:
                h = tdist.isf_two_sided(view.alpha, a.n - 1) * a.std / math.sqrt(a.n)  # t.ppf(1 - alpha/2)
            else:
                h = 0.0
            lo.append(h)
            hi.append(h)
        traces.append({"type": "scatter", "mode": "markers", "name": pretty(view.metric), "y": labels,
                       "x": [a.mean for a in arms], "customdata": [[a.index, a.n] for a in arms],
                       "error_x": {"type": "data", "array": hi, "thickness": 1.2, "width": 3},
                       "marker": {"size": 9, "color": PALETTE[0]},
                       "hovertemplate": "%{y}<br>%{x:.4g} (n=%{customdata[1]})<extra></extra>"})
        title = f"{pretty(view.metric)} per arm, mean with {1 - view.alpha:.0%} t interval over seeds " \
                f"(no baseline declared){shown}"
        xtitle = pretty(view.metric)
        shapes = []
    lay = layout(title, xtitle, "", height=max(300, 130 + 22 * len(arms)), shapes=shapes,
                 margin={"l": 60, "r": 20, "t": 50, "b": 90})
    lay["yaxis"] = {"autorange": "reversed", "automargin": True, "type": "category",
                    "categoryorder": "array", "categoryarray": labels}
    lay["legend"] = {"orientation": "h", "x": 0, "y": 0, "yref": "container", "yanchor": "bottom",
                     "font": {"size": 11}}
    return {"data": traces, "layout": lay}


# -- the metric against the axes --------------------------------------------------------------------
def _axis_kind(values: list[Any]) -> str:
    """"log" for positive numbers spanning two decades (learning rates), "linear" for numbers,
    else "category"."""
    if values and all(_num(v) for v in values):
        if all(v > 0 for v in values) and max(values) / min(values) >= 100:
            return "log"
        return "linear"
    return "category"


def axis_figure(view: StudyView, axis: str) -> dict[str, Any] | None:
    """The metric (mean ± std over seeds) of every arm against ``axis``; a line per value of the
    one other varying axis when there is one with few values; the marginal (mean and range over
    arms at each value) when there are too many arms to draw."""
    values = view.values(axis)
    kind = _axis_kind(values)
    arms = [a for a in view.arms if a.mean is not None]
    if not arms:
        return None

    def x_of(a: ArmView) -> Any:
        v = a.arm.params.get(axis)
        return v if kind != "category" else value_text(v)

    others = [k for k in view.varying if k != axis]
    name = view.names.get(axis, axis)
    traces: list[dict[str, Any]] = []
    hover = "%{text}<br>" + escape(name) + " %{x}<br>" + pretty(view.metric) + " %{y:.4g}<extra></extra>"
    if len(arms) > MAX_POINTS:
        traces += marginal_traces(view, arms, lambda a: a.arm.params.get(axis), values, kind == "category", hover)
        title = f"{pretty(view.metric)} against {escape(name)} ({len(arms)} arms: mean, range and best per value)"
    else:
        group_axis = others[0] if len(others) == 1 and len(view.values(others[0])) <= MAX_GROUPS else None
        groups: dict[str, list[ArmView]] = {}
        for a in arms:
            key = value_key(a.arm.params.get(group_axis)) if group_axis else ""
            groups.setdefault(key, []).append(a)
        order = {value_key(v): i for i, v in enumerate(values)}
        for gi, (key, pts) in enumerate(groups.items()):
            pts.sort(key=lambda a: order[value_key(a.arm.params.get(axis))])
            color = PALETTE[gi % len(PALETTE)]
            label = (f"{view.names.get(group_axis, group_axis)}={value_text(pts[0].arm.params.get(group_axis))}"
                     if group_axis else pretty(view.metric))
            traces.append({"type": "scatter", "mode": "lines+markers" if group_axis and len(pts) > 1 else "markers",
                           "name": escape(label), "x": [x_of(a) for a in pts], "y": [a.mean for a in pts],
                           "error_y": {"type": "data", "array": [_std(a) for a in pts], "visible": True, "thickness": 1},
                           "text": [f"{escape(a.label)} (n={a.n})" for a in pts],
                           "customdata": [[a.index] for a in pts],
                           "marker": {"size": 8, "color": color, "opacity": 0.85 if len(arms) > 30 else 1},
                           "line": {"color": color, "width": 1}, "hovertemplate": hover})
        extra = f", one line per {escape(view.names.get(group_axis, group_axis))}" if group_axis else \
            (" (every arm; the other axes vary too)" if others else "")
        title = f"{pretty(view.metric)} against {escape(name)}{extra}"
    lay = layout(title, escape(axis), pretty(view.metric))
    lay["xaxis"]["type"] = kind
    if kind == "category":
        lay["xaxis"]["categoryorder"] = "array"
        lay["xaxis"]["categoryarray"] = [value_text(v) for v in values]
    elif kind == "linear" and all(isinstance(v, int) for v in values) and len(values) <= 20:
        lay["xaxis"]["tickvals"] = sorted(values)  # kernel sizes 3, 7, 9, 13: those ticks, not 2.5, 5, ...
    lay["showlegend"] = len(traces) > 1
    return {"data": traces, "layout": lay}


def marginal_traces(view: StudyView, arms: list[ArmView], x_of: Any, values: list[Any], category: bool,
                    hover: str) -> list[dict[str, Any]]:
    """Too many arms to draw one by one: per x value, the mean over arms (bar: their range) and
    the best arm."""
    by_x: dict[Any, list[ArmView]] = {}
    for a in arms:
        by_x.setdefault(value_key(x_of(a)), []).append(a)
    xs, ms, lo, hi, best, text = [], [], [], [], [], []
    for v in values:
        group = by_x.get(value_key(v))
        if not group:
            continue
        means = [a.mean for a in group]
        m = math.fsum(means) / len(means)  # type: ignore[arg-type]
        xs.append(value_text(v) if category else v)
        ms.append(m)
        lo.append(m - min(means))  # type: ignore[type-var,operator]
        hi.append(max(means) - m)  # type: ignore[type-var,operator]
        b = max(group, key=lambda a: a.mean if view.mode != "min" else -a.mean)  # type: ignore[operator]
        best.append(b.mean)
        text.append(f"{len(group)} arms; best: {escape(b.label)}")
    return [{"type": "scatter", "mode": "lines+markers", "name": "mean over arms (bar: range)", "x": xs, "y": ms,
             "text": text, "marker": {"size": 8, "color": PALETTE[0]},
             "error_y": {"type": "data", "symmetric": False, "array": hi, "arrayminus": lo, "thickness": 1},
             "hovertemplate": hover},
            {"type": "scatter", "mode": "markers", "name": "best arm", "x": xs, "y": best, "text": text,
             "marker": {"size": 8, "symbol": "star", "color": PALETTE[1]}, "hovertemplate": hover}]


def grid_axes(view: StudyView) -> tuple[str, str] | None:
    """Two varying axes that form a grid: every pair of their values has an arm (in the file's
    order: the first such pair)."""
    for i, a in enumerate(view.varying):
        for b in view.varying[i + 1:]:
            va, vb = view.values(a), view.values(b)
            if not (2 <= len(va) <= MAX_GRID and 2 <= len(vb) <= MAX_GRID):
                continue
            pairs = {(value_key(x.arm.params.get(a)), value_key(x.arm.params.get(b))) for x in view.arms}
            if len(pairs) == len(va) * len(vb):
                return a, b
    return None


def grid_figure(view: StudyView) -> dict[str, Any] | None:
    """The metric over the grid of two axes (mean over seeds; over the other axes' arms too, when
    more axes vary), values written in the cells."""
    axes = grid_axes(view)
    if axes is None:
        return None
    a, b = axes
    va, vb = view.values(a), view.values(b)
    cells: dict[tuple[str, str], list[float]] = {}
    for x in view.arms:
        if x.mean is not None:
            cells.setdefault((value_key(x.arm.params.get(a)), value_key(x.arm.params.get(b))), []).append(x.mean)
    z, counts = [], []
    for yv in vb:
        row, crow = [], []
        for xv in va:
            vals = cells.get((value_key(xv), value_key(yv)), [])
            row.append(math.fsum(vals) / len(vals) if vals else None)
            crow.append(len(vals))
        z.append(row)
        counts.append(crow)
    if all(v is None for r in z for v in r):
        return None
    rest = [view.names.get(k, k) for k in view.varying if k not in axes]
    over = f", mean over {', '.join(escape(r) for r in rest)}" if rest else ""
    na, nb = view.names.get(a, a), view.names.get(b, b)
    scale = "Viridis" if view.mode != "min" else "Viridis_r"
    return {"data": [{"type": "heatmap", "x": [value_text(v) for v in va], "y": [value_text(v) for v in vb], "z": z,
                      "customdata": counts, "colorscale": scale, "xgap": 1 if len(va) <= 40 else 0,
                      "ygap": 1 if len(vb) <= 40 else 0, **({"texttemplate": "%{z:.4g}"} if len(va) * len(vb) <= 400 else {}),
                      "colorbar": {"title": {"text": pretty(view.metric)}},
                      "hovertemplate": f"{escape(na)}=%{{x}}<br>{escape(nb)}=%{{y}}<br>"
                                       f"{pretty(view.metric)} %{{z:.4g}} (%{{customdata}} arms)<extra></extra>"}],
            "layout": layout(f"{pretty(view.metric)} over {escape(na)} × {escape(nb)}{over}", escape(a), escape(b),
                             height=min(900, max(320, 120 + 26 * len(vb))),
                             xaxis={"title": {"text": escape(a)}, "type": "category", "automargin": True},
                             yaxis={"title": {"text": escape(b)}, "type": "category", "automargin": True})}


def kernel_size(config: dict[str, Any]) -> float | None:
    """The (largest) depthwise kernel size of a trial's model, if its kwargs name one."""
    kw = (config.get("model") or {}).get("kwargs") or {}
    for key in ("kernel_size", "kernel_sizes", "large_kernel", "kernel"):
        v = kw.get(key)
        if isinstance(v, list) and v and all(_num(x) for x in v):
            return float(max(v))
        if _num(v):
            return float(v)
    return None


def size_figure(view: StudyView, what: str) -> dict[str, Any] | None:
    """The metric of every arm against params, FLOPs or kernel size, only when that varies across
    arms (a study of lr and drop rate has one model size: no such plot)."""
    def x_of(a: ArmView) -> float | None:
        t = a.first
        if what == "kernel size":
            return kernel_size(t.config)
        v = t.flops if what == "FLOPs" else t.n_params
        return float(v) if v else None

    pts = [(a, x_of(a)) for a in view.arms if a.mean is not None]
    pts = [(a, x) for a, x in pts if x is not None]
    if len({x for _, x in pts}) < 2:
        return None
    hover = "%{text}<br>" + what + " %{x:.4~s}<br>" + pretty(view.metric) + " %{y:.4g}<extra></extra>"
    pts.sort(key=lambda p: p[1])
    if len(pts) > MAX_POINTS:
        xs = {a.index: x for a, x in pts}
        data = marginal_traces(view, [a for a, _ in pts], lambda a: xs[a.index], sorted(set(xs.values())), False, hover)
    else:
        data = [{"type": "scatter", "mode": "markers", "name": pretty(view.metric),
                 "x": [x for _, x in pts], "y": [a.mean for a, _ in pts],
                 "error_y": {"type": "data", "array": [_std(a) for a, _ in pts], "visible": True, "thickness": 1},
                 "text": [f"{escape(a.label)} (n={a.n})" for a, _ in pts], "customdata": [[a.index] for a, _ in pts],
                 "marker": {"size": 8, "color": PALETTE[0]}, "hovertemplate": hover}]
    log = what != "kernel size"
    lay = layout(f"{pretty(view.metric)} against {what}", what + (" (multiply-adds)" if what == "FLOPs" else ""),
                 pretty(view.metric))
    if log:
        lay["xaxis"]["type"] = "log"
        lay["xaxis"]["exponentformat"] = "SI"  # 300M, 1.3G as the paper writes them (plotly's default says 1.3B)
    lay["showlegend"] = len(data) > 1
    return {"data": data, "layout": lay}


# -- curves ---------------------------------------------------------------------------------------
def curve_arms(view: StudyView, picked: list[int] | None = None) -> list[ArmView]:
    """The arms whose curves are drawn: ``picked`` (arm indices), else the baseline and the best."""
    if picked is not None:
        by = {a.index: a for a in view.arms}
        return [by[i] for i in picked if i in by][:MAX_CURVES]
    out = [view.baseline] if view.baseline is not None else []
    for a in view.best_first():
        if len(out) >= MAX_CURVES:
            break
        if a is not view.baseline:
            out.append(a)
    if not out:  # nothing finished yet: the first arms, so running trials show their epochs
        out = view.arms[:MAX_CURVES]
    return out


def curve_metrics(view: StudyView, history: dict[str, dict[str, list[tuple[int, float]]]]) -> list[str]:
    """The study metric first, then every other per-epoch metric the history has."""
    names = {m for h in history.values() for m in h if m not in NOT_CURVES and not ERF_RE.match(m)}
    return ([view.metric] if view.metric in names else []) + sorted(names - {view.metric})


def epoch_dtick(n: int) -> int:
    """An integer tick step (1, 2, 5, 10, 20, 50, ...) that gives at most ~12 ticks over ``n`` epochs."""
    scale = 1
    while True:
        for step in (scale, 2 * scale, 5 * scale):
            if n / step <= 12:
                return step
        scale *= 10


def curves_figure(view: StudyView, arms: list[ArmView], history: dict[str, dict[str, list[tuple[int, float]]]],
                  metric: str, bands: bool = False) -> dict[str, Any] | None:
    """Per-epoch ``metric`` of ``arms``: the mean over seeds per epoch, and a ±1 std band per arm
    (traces with ``meta: "band"``, hidden unless ``bands``: the page's toolbar toggles them).
    Epochs are shown counted from 1 (stored from 0), on integer ticks."""
    from ablate.stats import mean_std

    data: list[dict[str, Any]] = []
    last = 0
    for ai, arm in enumerate(arms):
        per_epoch: dict[int, list[float]] = {}
        for t in arm.arm.trials:
            for e, v in (history.get(t.trial_id) or {}).get(metric, []):
                if v is not None and math.isfinite(v):
                    per_epoch.setdefault(int(e) + 1, []).append(v)
        if not per_epoch:
            continue
        xs = sorted(per_epoch)
        last = max(last, xs[-1])
        ms = [mean_std(per_epoch[e]) for e in xs]
        color = PALETTE[ai % len(PALETTE)]
        label = escape(arm.label) + (" (baseline)" if arm.is_baseline else "")
        if any(sd for _, sd in ms):
            data.append({"type": "scatter", "x": xs + xs[::-1], "meta": "band", "visible": bands,
                         "y": [mu + (sd or 0) for mu, sd in ms] + [mu - (sd or 0) for mu, sd in ms][::-1],
                         "mode": "lines", "fill": "toself", "fillcolor": rgba(color, 0.12), "line": {"width": 0},
                         "hoverinfo": "skip", "showlegend": False, "legendgroup": label})
        data.append({"type": "scatter", "mode": "lines+markers", "x": xs, "y": [mu for mu, _ in ms],
                     "name": label, "legendgroup": label, "line": {"color": color, "width": 2},
                     "marker": {"size": 4}, "customdata": [len(per_epoch[e]) for e in xs],
                     "hovertemplate": f"{label}<br>epoch %{{x}}: %{{y:.4g}} (mean of %{{customdata}} seeds)<extra></extra>"})
    if not data:
        return None
    total = sum(a.mean is not None for a in view.arms)
    shown = f" ({len(arms)} of {total} arms)" if total > len(arms) else ""
    lay = layout(f"{pretty(metric)} per epoch, mean over seeds{shown}", "epoch", pretty(metric))
    lay["xaxis"].update({"tickmode": "linear", "tick0": 1, "dtick": epoch_dtick(last), "tickformat": "d",
                         "range": [0.5, last + 0.5]})
    return {"data": data, "layout": lay}


# -- ERF and kernel maps (paper studies) --------------------------------------------------------------
def erf_figure(view: StudyView) -> dict[str, Any] | None:
    """Table 10's high-contribution area ratios r at each threshold t, as arms x t."""
    names = sorted({m for m in set().union(*[t.final for t in view.record.trials]) if ERF_RE.match(m)},
                   key=lambda m: int(ERF_RE.match(m).group(1)))  # type: ignore[union-attr]
    if not names:
        return None
    rows, labels = [], []
    for arm in view.arms[:MAX_DOTS]:
        row = []
        for m in names:
            vals = list(arm.arm.by_seed(m).values())
            row.append(math.fsum(vals) / len(vals) if vals else None)
        if any(v is not None for v in row):
            rows.append(row)
            labels.append(escape(arm.label))
    if not rows:
        return None
    x = [f"t = {ERF_RE.match(m).group(1)}%" for m in names]  # type: ignore[union-attr]
    return {"data": [{"type": "heatmap", "z": rows, "x": x, "y": labels, "colorscale": "Viridis",
                      "colorbar": {"title": {"text": "r"}}, "texttemplate": "%{z:.3g}",
                      "hovertemplate": "%{y}<br>%{x}: r = %{z:.4g}<extra></extra>"}],
            "layout": layout("Effective receptive field: high-contribution area ratio r (Table 10)", "threshold t", "",
                             height=max(300, 60 + 28 * len(rows)),
                             yaxis={"autorange": "reversed", "automargin": True, "type": "category"})}


# -- all of one study ---------------------------------------------------------------------------------
def study_figures(view: StudyView, history: dict[str, dict[str, list[tuple[int, float]]]] | None = None,
                  artifacts: Path | str | None = None, tables: list[dict[str, Any]] | None = None
                  ) -> dict[str, dict[str, Any]]:
    """Every figure the study has data for, by key (see the module doc), in the page's order. The
    appendix analyses' tables (Table 10, kernel and shape-bias numbers) are appended to ``tables``."""
    from ablate.dashboard.appendix import appendix_parts, has_erf_table

    figs: dict[str, dict[str, Any] | None] = {"arms": arms_figure(view), "grid": grid_figure(view)}
    for axis in view.varying:
        figs[f"axis:{axis}"] = axis_figure(view, axis)
    if not any(a.split(".")[-1] in ("kernel_size", "kernel_sizes") for a in view.varying):
        figs["kernel"] = size_figure(view, "kernel size")
    figs["params"] = size_figure(view, "params")
    figs["flops"] = size_figure(view, "FLOPs")
    if history:
        arms = curve_arms(view)
        for m in curve_metrics(view, history):
            figs[f"curves:{m}"] = curves_figure(view, arms, history, m)
    figs["erf"] = None if has_erf_table(view.record) else erf_figure(view)
    extra, more = appendix_parts(view, artifacts)
    figs |= extra
    if tables is not None:
        tables += more
    return {k: v for k, v in figs.items() if v is not None}


def overview_figure(records: list[StudyRecord]) -> dict[str, Any]:
    """Trials per study by status (stacked bars); an empty database gets an empty chart saying so."""
    names = [escape(r.name) for r in records]
    counts = [Counter(t.status for t in r.trials) for r in records]
    data = [{"type": "bar", "orientation": "h", "name": s, "y": names, "x": [c.get(s, 0) for c in counts],
             "marker": {"color": STATUS_COLORS[s]}} for s in STATUSES if any(c.get(s) for c in counts) or s != INTERRUPTED]
    lay = layout("Trials per study", "trials", "", barmode="stack",
                 height=max(170, 100 + 24 * len(names)), margin={"l": 160, "r": 20, "t": 40, "b": 40})
    lay["yaxis"]["autorange"] = "reversed"
    if not records:
        lay["annotations"] = [{"text": "No studies yet: `ablate run studies/&lt;study&gt;.yaml` fills this page",
                               "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5,
                               "font": {"size": 14, "color": "#666"}}]
        lay["xaxis"]["range"] = [0, 1]
    return {"data": data, "layout": lay}
