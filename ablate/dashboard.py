"""One self-contained, interactive HTML page over the result database (Plotly, plotly.js inlined).

The page has a study picker; for the chosen study: its status, its table (the same as
``ablate table``), learning curves per arm (mean over seeds with a ±1 std band), the study metric
against kernel size, FLOPs and params, an ERF heatmap when the study has ``erf_r*`` metrics
(Table 10), and its failed trials with their errors. Plots are drawn only for the study shown and
only once they are on screen (the rest wait as JSON), so a database of 10,000 trials opens in a
couple of seconds.

``serve`` regenerates the page on every request, and the page reloads itself while any trial is
running. ``export_images`` writes every plot as PNG/SVG through kaleido, which drives
a local Chromium (Debian's ``chromium``; set ``BROWSER_PATH`` to use another).
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from ablate.stats import mean_std
from ablate.store import COMPLETED, FAILED, PENDING, RUNNING, Store, StudyRecord, TrialRecord
from ablate.tables import Arm, TableData, build_table, group_arms, to_html_fragment, TABLE_CSS
from ablate.text import strip_controls

MAX_CURVES = 12  # arms drawn in the learning curves (the best ones by the study metric)
MAX_FAILED = 200  # failed trials listed per study
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#637939"]
STATUS_COLORS = {COMPLETED: "#2ca02c", RUNNING: "#1f77b4", PENDING: "#c7c7c7", FAILED: "#d62728"}
ERF_RE = re.compile(r"^erf_r(\d+)$")


# -- figures (plain plotly figure dicts: no validation cost, JSON-ready) -------------------------
def _pretty(metric: str) -> str:
    return {"top1": "Top-1 (%)", "top5": "Top-5 (%)", "val_loss": "validation loss", "train_loss": "training loss",
            "miou": "mIoU"}.get(metric, metric)


def arm_label(arm: Arm) -> str:
    parts = []
    for k, v in arm.params.items():
        short = k.split(".")[-1]
        short = {"kernel_size": "k", "kernel_sizes": "k", "dilation": "d"}.get(short, short)
        parts.append(f"{short}={'-'.join(map(str, v)) if isinstance(v, list) else v}")
    # plotly renders a subset of HTML in labels: escape, so a value like "<b>" shows as itself
    return html.escape(" ".join(parts) or "(single arm)", quote=False)


def _layout(title: str, x: str, y: str, **extra: Any) -> dict[str, Any]:
    lay = {"title": {"text": title, "x": 0.02, "font": {"size": 15}}, "height": 380,
           "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
           "xaxis": {"title": {"text": x}, "zeroline": False, "automargin": True},
           "yaxis": {"title": {"text": y}, "zeroline": False, "automargin": True},
           "legend": {"font": {"size": 11}}, "hovermode": "closest"}
    lay.update(extra)
    return lay


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _mean_std(vals: list[float]) -> tuple[float, float]:
    m, s = mean_std(vals)
    return m, s or 0.0


def curves_figures(record: StudyRecord, arms: list[Arm], metric: str, mode: str) -> dict[str, dict[str, Any]]:
    """Learning curves per arm (mean over seeds of each epoch's value, with a ±1 std band): one
    figure for the study metric (``curves``) and one per other recorded metric (``curves:<name>``),
    which the page swaps in on demand. At most MAX_CURVES arms, the best by the study metric."""
    metrics = [metric] + sorted({m for a in arms for t in a.trials for m in t.history
                                 if m != metric and m not in ("epoch", "lr") and not ERF_RE.match(m)})
    ranked = sorted(arms, key=lambda a: _final_mean(a, metric, mode), reverse=True)[:MAX_CURVES]
    shown = f" ({len(ranked)} best of {len(arms)} arms)" if len(arms) > len(ranked) else ""
    out: dict[str, dict[str, Any]] = {}
    for m in metrics:
        data: list[dict[str, Any]] = []
        for ai, arm in enumerate(ranked):
            per_epoch: dict[int, list[float]] = {}
            for t in arm.trials:
                for e, v in t.history.get(m, []):
                    if v is not None and math.isfinite(v):
                        per_epoch.setdefault(e, []).append(v)
            if not per_epoch:
                continue
            xs = sorted(per_epoch)
            ms = [_mean_std(per_epoch[e]) for e in xs]
            color = PALETTE[ai % len(PALETTE)]
            label = arm_label(arm)
            if any(sd > 0 for _, sd in ms):
                data.append({"type": "scatter", "x": xs + xs[::-1],
                             "y": [mu + sd for mu, sd in ms] + [mu - sd for mu, sd in ms][::-1],
                             "mode": "lines", "fill": "toself", "fillcolor": _rgba(color, 0.18), "line": {"width": 0},
                             "hoverinfo": "skip", "showlegend": False, "legendgroup": label})
            data.append({"type": "scatter", "mode": "lines+markers", "x": xs, "y": [mu for mu, _ in ms],
                         "name": label, "legendgroup": label, "line": {"color": color, "width": 2},
                         "marker": {"size": 4}, "customdata": [len(per_epoch[e]) for e in xs],
                         "hovertemplate": f"{label}<br>epoch %{{x}}: %{{y:.4g}} "
                                          "(mean of %{customdata} seeds)<extra></extra>"})
        if data:
            out["curves" if m == metric else f"curves:{m}"] = {
                "data": data, "layout": _layout(f"{_pretty(m)} per epoch, mean ± std over seeds{shown}",
                                                "epoch", _pretty(m))}
    return out


def _final_mean(arm: Arm, metric: str, mode: str) -> float:
    vals = list(arm.by_seed(metric).values())
    if not vals:
        return -math.inf
    m = math.fsum(vals) / len(vals)
    return m if mode == "max" else -m


def kernel_size(config: dict[str, Any]) -> float | None:
    """The (largest) depthwise kernel size of a trial's model, if its kwargs name one."""
    kw = (config.get("model") or {}).get("kwargs") or {}
    for key in ("kernel_size", "kernel_sizes", "large_kernel", "kernel"):
        v = kw.get(key)
        if isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v):
            return float(max(v))
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def scatter_figure(record: StudyRecord, arms: list[Arm], metric: str, xname: str) -> dict[str, Any] | None:
    """The study metric (mean ± std over seeds) of every arm against kernel size, FLOPs or params."""
    def xval(arm: Arm) -> float | None:
        t = arm.trials[0]
        if xname == "kernel size":
            return kernel_size(t.config)
        v = t.flops if xname == "FLOPs" else t.n_params
        return float(v) if v else None

    points = []
    for arm in arms:
        vals = list(arm.by_seed(metric).values())
        x = xval(arm)
        if x is None or not vals:
            continue
        m, s = _mean_std(vals)
        points.append((arm, x, m, s, len(vals)))
    if not points:
        return None
    # one trace per setting of the other axes, so a line joins the arms that differ only in kernel size
    vary = {k for a in arms for k in a.params if "kernel" in k.split(".")[-1]}
    groups: dict[str, list[tuple[Arm, float, float, float, int]]] = {}
    for p in points:
        key = arm_label(Arm({k: v for k, v in p[0].params.items() if k not in vary}, [])) if vary else ""
        groups.setdefault(key, []).append(p)
    if len(groups) > len(PALETTE):
        groups = {"": points}
    data = []
    for gi, (key, pts) in enumerate(groups.items()):
        pts.sort(key=lambda p: p[1])
        data.append({"type": "scatter", "mode": "lines+markers" if key and len(pts) > 1 else "markers",
                     "name": key if key and key != "(single arm)" else _pretty(metric),
                     "x": [p[1] for p in pts], "y": [p[2] for p in pts],
                     "error_y": {"type": "data", "array": [p[3] for p in pts], "visible": True, "thickness": 1},
                     "text": [f"{arm_label(p[0])} ({p[4]} seeds)" for p in pts],
                     "marker": {"size": 8, "color": PALETTE[gi % len(PALETTE)]},
                     "line": {"color": PALETTE[gi % len(PALETTE)], "width": 1},
                     "hovertemplate": "%{text}<br>" + xname + " %{x:.4~s}<br>" + _pretty(metric)
                     + " %{y:.4g}<extra></extra>"})
    xaxis_type = "log" if xname != "kernel size" else "linear"
    lay = _layout(f"{_pretty(metric)} against {xname}", xname + (" (multiply-adds)" if xname == "FLOPs" else ""),
                  _pretty(metric))
    lay["xaxis"]["type"] = xaxis_type
    if xaxis_type == "log":
        lay["xaxis"]["exponentformat"] = "SI"  # 300M, 1.3G as the paper writes them (plotly's default says 1.3B)
    lay["showlegend"] = len(data) > 1
    return {"data": data, "layout": lay}


def erf_figure(record: StudyRecord, arms: list[Arm]) -> dict[str, Any] | None:
    """Table 10's high-contribution area ratios r at each threshold t, as arms x t."""
    names = sorted({m for a in arms for t in a.done for m in t.final if ERF_RE.match(m)},
                   key=lambda m: int(ERF_RE.match(m).group(1)))  # type: ignore[union-attr]
    if not names:
        return None
    rows, labels = [], []
    for arm in arms:
        row = []
        for m in names:
            vals = list(arm.by_seed(m).values())
            row.append(math.fsum(vals) / len(vals) if vals else None)
        if any(v is not None for v in row):
            rows.append(row)
            labels.append(arm_label(arm))
    if not rows:
        return None
    x = [f"t = {ERF_RE.match(m).group(1)}%" for m in names]  # type: ignore[union-attr]
    return {"data": [{"type": "heatmap", "z": rows, "x": x, "y": labels, "colorscale": "Viridis",
                      "colorbar": {"title": {"text": "r"}}, "texttemplate": "%{z:.3g}",
                      "hovertemplate": "%{y}<br>%{x}: r = %{z:.4g}<extra></extra>"}],
            "layout": _layout("Effective receptive field: high-contribution area ratio r (Table 10)", "threshold t", "",
                              height=max(300, 60 + 28 * len(rows)),
                              yaxis={"autorange": "reversed", "automargin": True})}  # arms in table order


HEATMAP_ARTIFACTS = {  # figure key: (file in the trial's artifact folder, title)
    "erf_map": ("erf.npy", "ERF, score A in [0, 1] (App. B)"),
    "kernel_map": ("kernel.npy", "Kernel |W| over channels, in [0, 1] (App. F)"),
}
MAX_MAP_SIDE = 128  # larger maps (a 1024x1024 ERF) are sampled down to keep the page small


def artifact_figures(record: StudyRecord, arms: list[Arm], root: Path | None = None) -> dict[str, dict[str, Any]]:
    """ERF and kernel heatmaps from 2-D arrays that trials saved with ``numpy.save`` as
    ``<artifacts>/<study>/<trial id>/erf.npy`` or ``kernel.npy`` (the artifact folder of
    ablate.artifacts). One figure per arm (its first completed trial that has the file): the first
    under the plain key, the others as ``<key>:<n>``, which the page offers in a picker."""
    import numpy as np

    from ablate.artifacts import artifacts_root

    root = root or artifacts_root()  # a str since the store may be a URI; heatmaps are read from a local folder
    if isinstance(root, str):
        if "://" in root:
            return {}
        root = Path(root)
    folder = root / record.name
    out: dict[str, dict[str, Any]] = {}
    if not folder.is_dir():
        return out
    for key, (fname, title) in HEATMAP_ARTIFACTS.items():
        n = 0
        for arm in arms:
            path = next((folder / t.trial_id / fname for t in arm.done
                         if (folder / t.trial_id / fname).is_file()), None)
            if path is None or n >= MAX_CURVES:
                continue
            try:
                z = np.load(path, allow_pickle=False).astype(float)
            except (OSError, ValueError):
                continue
            if z.ndim != 2 or not z.size:
                continue
            for axis in (0, 1):  # sample down, keeping the centre row/column
                if z.shape[axis] > MAX_MAP_SIDE:
                    z = np.take(z, np.linspace(0, z.shape[axis] - 1, MAX_MAP_SIDE).round().astype(int), axis=axis)
            top = float(np.nanmax(np.abs(z))) or 1.0
            label = arm_label(arm)
            out[key if n == 0 else f"{key}:{n}"] = {
                "data": [{"type": "heatmap", "z": np.round(z / top, 4).tolist(), "colorscale": "Viridis",
                          "zmin": 0, "zmax": 1, "hovertemplate": "(%{x}, %{y}): %{z:.3f}<extra></extra>"}],
                "layout": _layout(f"{title}: {label}", "", "", height=420,
                                  xaxis={"showgrid": False, "zeroline": False, "constrain": "domain"},
                                  yaxis={"autorange": "reversed", "scaleanchor": "x", "constrain": "domain",
                                         "showgrid": False, "zeroline": False, "automargin": True}),
                "_label": label}
            n += 1
    return out


def study_figures(record: StudyRecord, arms: list[Arm] | None = None,
                  artifacts: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every figure the study has data for, by name: curves (and curves:<metric>), kernel, flops,
    params, erf (the ratios of Table 10), erf_map and kernel_map (heatmaps from artifacts)."""
    arms = arms if arms is not None else group_arms(record)
    metric = (record.spec.get("metric") or {}).get("name", "top1")
    mode = (record.spec.get("metric") or {}).get("mode", "max")
    figs: dict[str, dict[str, Any] | None] = dict(curves_figures(record, arms, metric, mode))
    figs |= {"kernel": scatter_figure(record, arms, metric, "kernel size"),
             "flops": scatter_figure(record, arms, metric, "FLOPs"),
             "params": scatter_figure(record, arms, metric, "params"),
             "erf": erf_figure(record, arms)}
    figs |= artifact_figures(record, arms, artifacts)
    return {k: v for k, v in figs.items() if v is not None}


def overview_figure(records: list[StudyRecord]) -> dict[str, Any]:
    """Trials per study by status (stacked bars); an empty database gets an empty chart saying so."""
    names = [html.escape(r.name, quote=False) for r in records]
    counts = [Counter(t.status for t in r.trials) for r in records]
    data = [{"type": "bar", "orientation": "h", "name": s, "y": names, "x": [c.get(s, 0) for c in counts],
             "marker": {"color": STATUS_COLORS[s]}} for s in (COMPLETED, RUNNING, PENDING, FAILED)]
    lay = _layout("Trials per study", "trials", "", barmode="stack",
                  height=max(170, 100 + 24 * len(names)), margin={"l": 160, "r": 20, "t": 40, "b": 40})
    lay["yaxis"]["autorange"] = "reversed"
    if not records:
        lay["annotations"] = [{"text": "No studies yet: `ablate run studies/&lt;study&gt;.yaml` fills this page",
                               "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5,
                               "font": {"size": 14, "color": "#666"}}]
        lay["xaxis"]["range"] = [0, 1]
    return {"data": data, "layout": lay}


# -- the page -----------------------------------------------------------------------------------
PAGE_CSS = TABLE_CSS + """
body { font: 14px/1.45 system-ui, -apple-system, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #263238; color: #fff; padding: 10px 20px; display: flex; gap: 20px; align-items: center; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; font-weight: 600; }
header .db { color: #b0bec5; font-size: 12px; }
header select { font-size: 14px; padding: 3px 6px; min-width: 260px; }
main { padding: 10px 20px 40px; }
section.study h2 { margin: 12px 0 2px; font-size: 20px; }
.desc { color: #555; margin: 0 0 6px; }
.status span { display: inline-block; margin-right: 14px; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 4px; vertical-align: baseline; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 12px; margin: 10px 0; }
.plot-wrap { position: relative; background: #fff; border: 1px solid #e0e0e0; border-radius: 4px; contain: layout paint; }
.plot-wrap .plot { min-height: 300px; }
#plot-overview { background: #fff; border: 1px solid #e0e0e0; border-radius: 4px; margin: 10px 0; }
.plot-tools { font-size: 12px; color: #555; padding: 4px 10px 0; }
select.fig-pick { font-size: 12px; }
.card { background: #fff; border: 1px solid #e0e0e0; border-radius: 4px; padding: 8px 14px; margin: 10px 0; overflow-x: auto;
        content-visibility: auto; contain-intrinsic-size: auto 600px; }  /* long tables: laid out when on screen */
table.failed { border-collapse: collapse; font-size: 13px; }
table.failed td, table.failed th { border-top: 1px solid #eee; padding: 4px 8px; vertical-align: top; text-align: left; }
table.failed pre { margin: 0; white-space: pre-wrap; max-width: 80em; font-size: 12px; color: #b71c1c; }
.muted { color: #777; }
"""

PAGE_JS = r"""
(function () {
  var REFRESH = %(refresh)d;
  var active = %(active)s;
  var picker = document.getElementById('study-picker');
  var config = {responsive: true, displaylogo: false};
  var parsed = {};
  function figsOf(name) {
    if (!parsed[name]) {
      var el = document.getElementById('figs-' + name);
      parsed[name] = el ? JSON.parse(el.textContent) : {};
    }
    return parsed[name];
  }
  document.querySelectorAll('select.fig-pick').forEach(function (sel) {
    sel.addEventListener('change', function () {
      var fig = figsOf(sel.dataset.study)[sel.value];
      var div = document.getElementById('plot-' + sel.dataset.study + '-' + sel.dataset.plot);
      if (fig && div) { Plotly.react(div, fig.data, fig.layout, config); }
    });
  });
  var plotted = {}, pending = {};
  function plot(div, fig) {
    if (!plotted[div.id]) {
      if (pending[div.id] && observer) { observer.unobserve(div); }
      delete pending[div.id];
      plotted[div.id] = Plotly.newPlot(div, fig.data, fig.layout, config);
    }
    return plotted[div.id];
  }
  var observer = ('IntersectionObserver' in window) ? new IntersectionObserver(function (entries) {
    entries.forEach(function (e) {
      if (e.isIntersecting && pending[e.target.id]) { plot(e.target, pending[e.target.id]); }
    });
  }, {rootMargin: '300px'}) : null;
  function items(name) {
    var figs = figsOf(name), out = [];
    Object.keys(figs).forEach(function (key) {
      var div = document.getElementById('plot-' + name + '-' + key);
      if (div) { out.push([div, figs[key]]); }
    });
    return out;
  }
  // Draw the study's plots that are on screen (or nearly); the others draw when scrolled to.
  // Resolves with the number drawn now.
  function draw(name) {
    var jobs = [], reach = window.innerHeight + 300;
    items(name).forEach(function (it) {
      var r = it[0].getBoundingClientRect();
      if (!observer || (r.top < reach && r.bottom > -300)) { jobs.push(plot(it[0], it[1])); }
      else if (!plotted[it[0].id]) { pending[it[0].id] = it[1]; observer.observe(it[0]); }
    });
    return Promise.all(jobs).then(function () { return jobs.length; });
  }
  function drawAll(name) {
    var all = items(name).map(function (it) { return plot(it[0], it[1]); });
    return Promise.all(all).then(function () { return all.length; });
  }
  var current = null;
  window.addEventListener('beforeprint', function () { if (current) { drawAll(current); } });
  function show(name) {
    document.querySelectorAll('section.study').forEach(function (s) { s.hidden = s.dataset.study !== name; });
    if (picker && picker.value !== name) { picker.value = name; }
    if (name && location.hash !== '#' + encodeURIComponent(name)) { history.replaceState(null, '', '#' + encodeURIComponent(name)); }
    current = name;
    return name ? draw(name) : Promise.resolve(0);
  }
  performance.mark('ablate:dom-parsed');
  var jobs = [];
  var ov = document.getElementById('plot-overview');
  var ovFig = JSON.parse(document.getElementById('fig-overview').textContent);
  jobs.push(Plotly.newPlot(ov, ovFig.data, ovFig.layout, config));
  var names = picker ? Array.prototype.map.call(picker.options, function (o) { return o.value; }) : [];
  var wanted = decodeURIComponent(location.hash.slice(1));
  var first = names.indexOf(wanted) >= 0 ? wanted : (names[0] || null);
  jobs.push(show(first));
  if (picker) { picker.addEventListener('change', function () { show(picker.value); }); }
  ov.on && ov.on('plotly_click', function (ev) {
    var i = ev && ev.points && ev.points[0] ? ev.points[0].pointIndex : -1;
    if (i >= 0 && i < names.length) { show(names[i]); }  // bars are in the picker's order
  });
  window.ablateShow = show;
  window.ablateDrawAll = function () { return current ? drawAll(current) : Promise.resolve(0); };
  window.ablateReady = Promise.all(jobs).then(function () {
    performance.mark('ablate:drawn');
    window.ablateDrawnAt = performance.now();
    document.body.dataset.ready = '1';
    return window.ablateDrawnAt;
  });
  if (REFRESH > 0 && active) { setTimeout(function () { location.reload(); }, REFRESH * 1000); }
})();
"""


def _json_script(el_id: str, obj: Any) -> str:
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_json_default)
    text = text.replace("</", "<\\/").replace("<!--", "<\\!--")
    return f'<script type="application/json" id="{html.escape(el_id)}">{text}</script>'


def _json_default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    raise TypeError(type(o).__name__)


def _clean(obj: Any) -> Any:
    """NaN/inf are not JSON: they become null (Plotly leaves a gap)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


_ID_RE = re.compile(r"[^A-Za-z0-9_.-]")


def _dom_id(name: str) -> str:
    return _ID_RE.sub("_", name)


def _status_line(trials: list[TrialRecord]) -> str:
    c = Counter(t.status for t in trials)
    parts = [f'<span><i class="dot" style="background:{STATUS_COLORS[s]}"></i>{c.get(s, 0)} {s}</span>'
             for s in (COMPLETED, RUNNING, PENDING, FAILED)]
    return f'<div class="status">{len(trials)} trials: ' + "".join(parts) + "</div>"


def _failed_html(trials: list[TrialRecord]) -> str:
    failed = [t for t in trials if t.status == FAILED]
    if not failed:
        return ""
    e = html.escape
    rows = []
    for t in failed[:MAX_FAILED]:
        params = ", ".join(f"{k.split('.')[-1]}={json.dumps(v)}" for k, v in t.params.items())
        err = (t.error or "(no error recorded)")
        err = err if len(err) <= 4000 else err[:4000] + " …"
        when = t.ended_at.strftime("%Y-%m-%d %H:%M") if t.ended_at else ""
        rows.append(f"<tr><td><code>{e(t.trial_id)}</code></td><td>{e(params)}</td><td>{e(when)}</td>"
                    f"<td><pre>{e(err)}</pre></td></tr>")
    more = (f'<p class="muted">…and {len(failed) - MAX_FAILED} more; `ablate export` lists them all.</p>'
            if len(failed) > MAX_FAILED else "")
    return (f'<div class="card"><h3>Failed trials ({len(failed)})</h3><table class="failed"><thead><tr><th>trial</th>'
            "<th>params</th><th>ended</th><th>error</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>" + more + "</div>")


FIG_ORDER = ("curves", "kernel", "flops", "params", "erf", "erf_map", "kernel_map")


def study_section(record: StudyRecord, artifacts: Path | None = None) -> tuple[str, str]:
    """(section HTML, figures JSON script) of one study."""
    e = html.escape
    sid = _dom_id(record.name)
    arms = group_arms(record)
    table: TableData = build_table(record)
    figs = _clean(study_figures(record, arms, artifacts))
    metric = (record.spec.get("metric") or {}).get("name", "top1")
    plots = ""
    for k in FIG_ORDER:
        if k not in figs:
            continue
        alts = [a for a in figs if a == k or a.startswith(k + ":")]
        pick = ""
        if len(alts) > 1:
            def label(a: str) -> str:
                if "_label" in figs[a]:
                    return html.unescape(figs[a]["_label"])
                return _pretty(a.split(":", 1)[1] if ":" in a else metric)

            opts = "".join(f'<option value="{e(a)}">{e(label(a))}</option>' for a in alts)
            what = "arm" if "_label" in figs[k] else "metric"
            pick = (f'<div class="plot-tools">{what} <select class="fig-pick" data-study="{sid}" data-plot="{k}">'
                    f"{opts}</select></div>")
        plots += f'<div class="plot-wrap">{pick}<div class="plot" id="plot-{sid}-{k}"></div></div>'
    if not plots:
        plots = '<p class="muted">No metrics recorded yet: plots appear after the first epoch.</p>'
    section = (f'<section class="study" data-study="{sid}" hidden>'
               f"<h2>{e(record.name)}</h2>"
               + (f'<p class="desc">{e(record.description)}</p>' if record.description else "")
               + _status_line(record.trials)
               + f'<div class="grid">{plots}</div>'
               + f'<div class="card">{to_html_fragment(table)}</div>'
               + _failed_html(record.trials) + "</section>")
    return section, _json_script(f"figs-{sid}", figs)


STATIC = Path(__file__).resolve().parent / "static"
_VERSION_RE = re.compile(r"plotly\.js(?: \([a-z -]+\))? v(\d+\.\d+\.\d+)")


def plotly_js() -> tuple[str, str]:
    """(source, description) of the plotly.js inlined into the page: the vendored cartesian bundle
    (scatter, bar, heatmap: all the page draws; a third of the full size, so a cold browser opens
    the page twice as fast) when its version matches plotly's own bundle, else plotly's full bundle."""
    from plotly.offline import get_plotlyjs

    full = get_plotlyjs()
    m = _VERSION_RE.search(full[:300])
    for f in sorted(STATIC.glob("plotly-cartesian-*.min.js")):
        small = f.read_text(encoding="utf-8")
        s = _VERSION_RE.search(small[:300])
        if m and s and s.group(1) == m.group(1):
            return small, f"plotly.js {s.group(1)} (cartesian)"
    return full, f"plotly.js {m.group(1) if m else '?'}"


def build_page(records: list[StudyRecord], *, source: str = "", refresh: int = 0,
               now: datetime | None = None, artifacts: Path | None = None) -> str:
    """The whole page for these studies. ``refresh`` > 0: reload every that many seconds while any
    trial is running (``serve`` uses it)."""
    e = html.escape
    now = now or datetime.now(timezone.utc)
    sections, scripts = [], []
    for r in records:
        s, j = study_section(r, artifacts)
        sections.append(s)
        scripts.append(j)
    # running, not pending: a study left half done (its driver gone) must not reload the page forever
    active = any(t.status == RUNNING for r in records for t in r.trials)
    options = "".join(f'<option value="{e(_dom_id(r.name))}">{e(r.name)} ({len(r.trials)} trials)</option>'
                      for r in records)
    picker = (f'<label>Study <select id="study-picker">{options}</select></label>' if records
              else '<span class="muted">no studies</span>')
    empty = ("" if records else
             '<div class="card"><p>No studies in this database yet. Run one with '
             "<code>ablate run studies/dilation.yaml --profile demo</code>, then reload.</p></div>")
    js, _ = plotly_js()
    refresh_note = (f' · refreshes every {refresh}s while trials run' if refresh and active else "")
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>ablate dashboard</title>",
        f"<style>{PAGE_CSS}</style>",
        f"<script>{js}</script><script>performance.mark('ablate:plotly-loaded')</script>",
        "</head><body>",
        f'<header><h1>ablate dashboard</h1>{picker}<span class="db">{e(source)} · '
        f"generated {now.strftime('%Y-%m-%d %H:%M:%S UTC')}{refresh_note}</span></header>",
        "<main>", empty,
        '<div class="plot" id="plot-overview"></div>',
        *sections,
        _json_script("fig-overview", _clean(overview_figure(records))),
        *scripts,
        "<script>", PAGE_JS % {"refresh": int(refresh), "active": "true" if active else "false"}, "</script>",
        "</main></body></html>\n",
    ])


def report(store: Store, *, names: Iterable[str] | None = None, refresh: int = 0,
           artifacts: Path | None = None) -> str:
    """The dashboard page of ``store``'s studies (all, or ``names``); heatmaps come from the
    artifact folder ``artifacts`` (default: ablate.artifacts.artifacts_root())."""
    records = store.load_many(names, history=True)
    return build_page(records, source=_safe_url(store.url), refresh=refresh, artifacts=artifacts)


def _safe_url(url: str) -> str:
    """The database URL without a password."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def write_report(store: Store, out: str | Path, **kw: Any) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(store, **kw), encoding="utf-8")
    return out


# -- images ---------------------------------------------------------------------------------------
class ImageExportError(RuntimeError):
    """PNG/SVG export cannot run here (no kaleido, or no Chromium for it)."""


def export_images(records: list[StudyRecord], out_dir: str | Path, formats: Iterable[str] = ("png", "svg"),
                  *, width: int = 900, height: int = 500, scale: float = 1.0,
                  artifacts: Path | None = None) -> list[Path]:
    """Every plot of every study as ``out_dir/<study>/<plot>.<fmt>`` via kaleido and a local Chromium.

    kaleido 1.x finds Chromium on PATH (Debian's ``chromium``) or at ``$BROWSER_PATH``; it is told to
    load no MathJax and uses the plotly.js shipped with the plotly package, so it needs no network."""
    try:
        import kaleido
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImageExportError("image export needs the kaleido package (pip install kaleido==1.5.0)") from e
    out_dir = Path(out_dir)
    specs, paths = [], []
    for r in records:
        figs = {"overview": overview_figure([r])} | study_figures(r, artifacts=artifacts)
        for key, fig in figs.items():
            fig = _clean({k: v for k, v in fig.items() if not k.startswith("_")})
            fig["layout"] = {**fig["layout"], "height": fig["layout"].get("height", height)}
            for fmt in formats:
                p = out_dir / _dom_id(r.name) / f"{key.replace(':', '_')}.{fmt}"
                p.parent.mkdir(parents=True, exist_ok=True)
                specs.append({"fig": fig, "path": p, "opts": {"format": fmt, "width": width,
                                                              "height": fig["layout"]["height"], "scale": scale}})
                paths.append(p)
    if not specs:
        return []
    try:
        kaleido.write_fig_from_object_sync(specs, kopts={"mathjax": False})
    except Exception as e:  # kaleido raises ChromeNotFoundError and others from choreographer
        raise ImageExportError(f"kaleido could not export images ({type(e).__name__}: {e}); it needs a "
                               "Chromium: `apt-get install chromium`, or set BROWSER_PATH") from e
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ImageExportError(f"kaleido wrote {len(paths) - len(missing)} of {len(paths)} images; "
                               f"missing {missing[0]}")
    return paths


# -- serving ----------------------------------------------------------------------------------------
def make_server(store: Store, host: str = "127.0.0.1", port: int = 8050, refresh: int = 10,
                artifacts: Path | None = None):
    """A threading HTTP server answering ``/`` with a freshly generated page (stdlib only)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            path = self.path.split("?", 1)[0]
            if path not in ("/", "/index.html", "/report.html"):
                self.send_error(404, "the dashboard is at /")
                return
            try:
                body = report(store, refresh=refresh, artifacts=artifacts).encode("utf-8")
            except Exception as e:  # keep serving; show what broke
                # the status line and headers carry fixed text only: an exception's message can hold text
                # from the database (a CRLF would inject headers); it goes into the HTML-escaped body
                self.send_error(500, "Internal Server Error",
                                f"could not build the dashboard: {type(e).__name__}: {strip_controls(e)}")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one line per request is noise here
            pass

    return ThreadingHTTPServer((host, port), Handler)
