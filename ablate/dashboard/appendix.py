"""The paper's appendix analyses on the dashboard, for studies whose trials have them:

* ERF (Appendix B, Fig. 1 / Table 10): ``erf_maps``, the log-scaled maps Â of the arms side by side
  on one colour scale (``ablate.analyses.page.erf_page``), and the r table (rows = arms, columns =
  t, the paper's numbers beside when the study file's ``analyses.erf.rows`` give them);
* kernel maps (Appendix F, Fig. 6): ``kernel_maps`` (``kernel_maps:<n>`` beyond one figure), each
  arm's large kernel alone and, with a small re-param branch, the merged kernel, drawn by
  ``ablate.analyses.kernels.kernel_maps_figure``; their summary numbers as a table;
* shape bias (Appendix C, Fig. 5): ``shape_bias``, ``ablate.analyses.shape_bias.figure5`` of the
  arms (per-category points, a line at each model's mean), and its numbers as a table.

Arrays are read only through ``ablate.artifacts.ArtifactStore``, only for completed trials that have
the analysis' metrics, only from a local folder (a remote or unreadable store gives a note, not an
error), and only for the first arms (``MAX_*``), downsampled: the page stays one bounded file.
numpy, plotly's figure builders and the artifact store are imported only when a study has an analysis.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ablate.store_reads import COMPLETED, StudyRecord, TrialRecord

from ablate.dashboard.view import StudyView, escape

MAX_ERF_MAPS = 12  # arms whose ERF maps are drawn (the paper's Figure 1 has 4)
ERF_SIDE = 128  # pixels per side of a drawn ERF map (64 beyond ERF_WIDE_AT maps)
ERF_WIDE_AT = 6
ERF_COLS = 4  # maps per row
MAX_KERNEL_ARMS = 12
KERNEL_PANELS = 6  # heatmaps per kernel figure (Fig. 6 has 3); more arms: more figures, one picker
MAX_SHAPE_MODELS = 12
# the official code draws Â with seaborn's cmap="RdYlGn" (a diverging map, as the paper's Figure 1)
RDYLGN = ["#a50026", "#d73027", "#f46d43", "#fdae61", "#fee08b", "#ffffbf", "#d9ef8b", "#a6d96a", "#66bd63",
          "#1a9850", "#006837"]
ERF_R = re.compile(r"^erf_r\d")
KERNEL_COLUMNS = [("kernel_center3_share", "central 3x3 share", 9 / 169), ("kernel_skeleton_share", "skeleton share", 25 / 169),
                  ("kernel_center_value", "centre value", None), ("kernel_distance_corr", "ρ(|w|, distance)", None)]
SHAPE_COLUMNS = [("shape_bias", "shape bias"), ("shape_bias_category_mean", "mean over categories"),
                 ("shape_bias_shape_frac", "shape decisions"), ("shape_bias_texture_frac", "texture decisions"),
                 ("shape_bias_images", "conflict images")]


def _declared(record: StudyRecord, name: str) -> bool:
    return ((record.spec or {}).get("analyses") or {}).get(name) is not None


def completed_metrics(record: StudyRecord) -> set[str]:
    """The metric names any completed trial of ``record`` has: one pass over the trials (a study's
    appendix checks several names; at 10^4 trials a pass each was a tenth of the page's build)."""
    return set().union(*[t.final for t in record.trials if t.status == COMPLETED])


def _has(record: StudyRecord, metric: str | re.Pattern, names: set[str] | None = None) -> bool:
    names = completed_metrics(record) if names is None else names
    return any(metric.match(m) for m in names) if isinstance(metric, re.Pattern) else metric in names


def _local_store(root: Path | str | None) -> tuple[Any, str | None]:
    """(the ArtifactStore of a local ``root``, None) or (None, why its arrays are not drawn)."""
    from ablate.artifacts import ArtifactStore, artifacts_root

    uri = str(root) if root else artifacts_root()
    if "://" in uri:
        return None, f"maps not drawn: the artifact store {uri.split('://')[0]}://… is remote (the page reads a local folder)"
    if not Path(uri).is_dir():
        return None, f"maps not drawn: no artifact folder {uri} (--artifacts / ABLATE_ARTIFACTS)"
    return ArtifactStore(uri), None


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return math.fsum(values) / len(values) if values else None  # = statistics.fmean (no statistics import)


def _table(title: str, headers: list[str], rows: list[list[str]], notes: list[str], groups: list[str] | None = None,
           key: str = "") -> dict[str, Any]:
    """A table as the page renders it (the shape of ``page.table_json``)."""
    return {"key": key, "title": title, "headers": headers, "groups": groups or [""] * len(headers), "rows": rows,
            "bold": [], "notes": notes}


def _strip_template(fig: dict[str, Any], height: int) -> dict[str, Any]:
    """A plotly.py figure dict as the page's other figures: no template (kilobytes each), our height."""
    lay = {k: v for k, v in fig.get("layout", {}).items() if k != "template"}
    lay["height"] = height
    lay.setdefault("margin", {"l": 40, "r": 20, "t": 70, "b": 30})
    return {"data": fig.get("data", []), "layout": lay}


def _bare_axes(fig: dict[str, Any]) -> dict[str, Any]:
    """Heatmap panels as pictures: no ticks, grid or axis lines, each panel square within its domain."""
    for k, ax in fig["layout"].items():
        if re.match(r"^[xy]axis\d*$", k):
            ax.update({"showticklabels": False, "ticks": "", "showgrid": False, "zeroline": False, "showline": False,
                       "constrain": "domain"})
    return fig


# -- ERF: Figure 1 and Table 10 --------------------------------------------------------------------------
def erf_maps_figure(maps: list[tuple[str, list[list[float]], int]]) -> dict[str, Any]:
    """Figure 1: the maps Â (title, z rows top-down, stored side S) side by side, ERF_COLS a row, on one
    colour scale [0, 1] (each map is log10(A + 1) over its own max, as the official code draws it)."""
    n = len(maps)
    cols = min(n, ERF_COLS)
    rows = -(-n // cols)
    gap_x, gap_y = 0.03, 0.08
    w, h = (1 - gap_x * (cols - 1)) / cols, (1 - gap_y * (rows - 1)) / rows
    data, lay, notes = [], {}, []
    for i, (title, z, size) in enumerate(maps):
        r, c = divmod(i, cols)
        sfx = "" if i == 0 else str(i + 1)
        x0, y1 = c * (w + gap_x), 1 - r * (h + gap_y)
        data.append({"type": "heatmap", "z": z, "xaxis": f"x{sfx}", "yaxis": f"y{sfx}", "zmin": 0, "zmax": 1,
                     "colorscale": [[k / (len(RDYLGN) - 1), col] for k, col in enumerate(RDYLGN)],
                     "showscale": i == 0, "name": title,
                     **({"colorbar": {"title": {"text": "log10(A+1)/max"}, "len": 0.9}} if i == 0 else {}),
                     "hovertemplate": f"{title}<br>(%{{x}}, %{{y}}) of {len(z)}² (S = {size}): %{{z:.3f}}<extra></extra>"})
        lay[f"xaxis{sfx}"] = {"domain": [x0, x0 + w], "anchor": f"y{sfx}", "showticklabels": False, "showgrid": False,
                              "zeroline": False, "constrain": "domain"}
        lay[f"yaxis{sfx}"] = {"domain": [y1 - h, y1], "anchor": f"x{sfx}", "autorange": "reversed",
                              "scaleanchor": f"x{sfx}", "showticklabels": False, "showgrid": False,
                              "zeroline": False, "constrain": "domain"}
        notes.append({"text": title, "showarrow": False, "xref": "paper", "yref": "paper", "x": x0 + w / 2,
                      "y": y1, "yanchor": "bottom", "font": {"size": 12}})
    lay.update({"title": {"text": "Effective receptive field Â = log10(A + 1) / max, one colour scale (Fig. 1, App. B)",
                          "x": 0.02, "font": {"size": 15}},
                "annotations": notes, "height": 120 + rows * (300 if cols > 2 else 380),
                "margin": {"l": 20, "r": 20, "t": 80, "b": 20}, "hovermode": "closest"})
    return _bare_axes({"data": data, "layout": lay})


def _erf_table(table: Any, note: str | None) -> dict[str, Any]:
    """Table 10's layout: rows = arms, per t the measured r (mean ± std over seeds) and, when the file
    gives it, the paper's beside."""
    from ablate.analyses.names import percent_text

    paper = any(r.paper for r in table.rows)
    headers, groups = ["Model"], [""]
    for th in table.thresholds:
        t = f"t = {percent_text(th)}%"
        headers += ["r (%)"] + (["paper"] if paper else [])
        groups += [t] * (2 if paper else 1)
    headers.append("seeds")
    groups.append("")
    rows = []
    for r in table.rows:
        cells = [r.label]
        for i, (mean, std, _) in enumerate(r.values):
            cells.append("–" if mean is None else f"{mean:.1f}" + (f" ± {std:.1f}" if std is not None else ""))
            if paper:
                cells.append(f"{r.paper[i]:.1f}" if r.paper else "")
        cells.append(str(max((v[2] for v in r.values), default=0)))
        rows.append(cells)
    notes = list(table.notes) + ([note] if note else [])
    return _table(f"Table 10 ({table.study}): high-contribution area ratio r", headers, rows, notes, groups, "erf")


def erf_parts(record: StudyRecord, artifacts: Path | str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """({"erf_maps": figure} when maps exist, [the r table]) of a study that declares ``analyses.erf``."""
    from ablate.analyses.page import erf_page
    from ablate.analyses.tables import erf_table

    table = erf_table(record)
    shown = table.rows[:MAX_ERF_MAPS]
    ids = {tid for r in shown for tid in r.trial_ids}
    done = {t.trial_id for t in record.trials if t.status == COMPLETED and any(ERF_R.match(m) for m in t.final)}
    figs: dict[str, Any] = {}
    note = None
    store, why = _local_store(artifacts)
    if store is None:
        note = why
    elif ids & done:
        import dataclasses

        config = {}  # the dashboard reads one config per arm: each analysed trial gets its arm's (rows match on it)
        for t in record.trials:
            if t.config:
                config.setdefault(_arm(t), t.config)
        sub = StudyRecord(record.name, record.description, record.spec,
                          [dataclasses.replace(t, config=t.config or config.get(_arm(t), {}))
                           for t in record.trials if t.trial_id in ids & done])
        side = ERF_SIDE if len(shown) <= ERF_WIDE_AT else ERF_SIDE // 2
        try:
            maps = erf_page(sub, store.uri, max_side=side)["maps"]
        except (OSError, ValueError) as e:  # an unreadable file: the table still shows
            maps, note = [], f"maps not drawn: {type(e).__name__}: {e}"
        if maps:
            import numpy as np

            figs["erf_maps"] = erf_maps_figure([(escape(m.label), np.round(m.image, 3).tolist(), m.size) for m in maps])
            if len(table.rows) > len(shown):
                note = f"maps of the first {len(shown)} of {len(table.rows)} arms drawn"
        elif note is None:
            note = f"maps not drawn: no erf.npy of the analysed trials under {store.uri}"
    return figs, [_erf_table(table, note)]


def _arm(t: TrialRecord) -> str:
    import json

    return json.dumps({k: v for k, v in t.params.items() if k != "seed"}, sort_keys=True, default=str)


# -- kernel maps: Figure 6 ----------------------------------------------------------------------------------
def _arm_scalars(trials: list[TrialRecord], names: list[str]) -> dict[str, float]:
    out = {}
    for n in names:
        m = _mean([t.final[n] for t in trials if n in t.final])
        if m is not None:
            out[n] = m
    return out


def kernel_parts(view: StudyView, artifacts: Path | str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Figure 6's heatmaps per arm (large alone; merged too with a small branch; maps averaged over the
    arm's analysed seeds and rescaled to [0, 1]) and the summary numbers per arm."""
    from ablate.analyses.kernels import HAS_SMALL

    arms = [(a, [t for t in a.arm.done if "kernel_center3_share" in t.final]) for a in view.arms]
    arms = [(a, ts) for a, ts in arms if ts]
    store, note = _local_store(artifacts)
    panels: list[list[tuple[str, Any]]] = []  # per arm
    rows = []
    for a, ts in arms:
        s = _arm_scalars(ts, [n + v for n, _, _ in KERNEL_COLUMNS for v in ("", "_merged")] + [HAS_SMALL])
        small = s.get(HAS_SMALL, 0.0) >= 0.5
        row = [a.label, "yes" if small else "no"]
        for n, _, _ in KERNEL_COLUMNS:
            row += [_fmt(s.get(n)), _fmt(s.get(n + "_merged"))]
        rows.append(row + [str(len(ts))])
        if store is None or len(panels) >= MAX_KERNEL_ARMS:
            continue
        mine = []
        for variant in ("large", "merged") if small else ("large",):
            z = _mean_map(store, view.name, ts, f"kernel_{variant}.npy")
            if z is not None:
                what = ("large kernel alone" if variant == "large" else "merged (small added)") if small else "BN fused"
                mine.append((f"{escape(a.label)}<br>{what}", z))
        if mine:
            panels.append(mine)
    figs: dict[str, Any] = {}
    if panels:
        from ablate.analyses.kernels import kernel_maps_figure

        chunks: list[list[tuple[str, Any]]] = [[]]
        for mine in panels:
            if chunks[-1] and len(chunks[-1]) + len(mine) > KERNEL_PANELS:
                chunks.append([])
            chunks[-1] += mine
        for i, chunk in enumerate(chunks):
            fig = _bare_axes(_strip_template(kernel_maps_figure(chunk), 380))
            fig["layout"]["title"] = {"text": "Kernel magnitude summed over channels, in [0, 1] (Fig. 6, App. F)",
                                      "x": 0.02, "font": {"size": 15}}
            fig["_label"] = ", ".join(dict.fromkeys(t.split("<br>")[0] for t, _ in chunk))
            for note in fig["layout"].get("annotations", []):  # the panel titles: two short lines
                note["font"] = {"size": 11}
            figs["kernel_maps" if i == 0 else f"kernel_maps:{i}"] = fig
    if len(arms) > MAX_KERNEL_ARMS and store is not None:
        note = f"maps of the first {MAX_KERNEL_ARMS} of {len(arms)} arms drawn"
    headers = ["Arm", "small branch"] + [f"{h} ({v})" for _, h, _ in KERNEL_COLUMNS for v in ("large", "merged")] + ["seeds"]
    notes = ["Shares of the total |w| of the chosen depthwise conv (Appendix F): uniform would be "
             f"{9 / 169:.3f} in the central 3x3 and {25 / 169:.3f} on the skeleton (centre row and column) of "
             "a 13x13 kernel; the centre value of the map rescaled to [0, 1] (1: the centre is largest); "
             "ρ: Spearman correlation of magnitude with distance from the centre (negative: larger near "
             "the centre). large: the large kernel alone after BN fusion; merged: with the small kernel "
             "added (the same kernel without a small branch)."] + ([note] if note else [])
    return figs, [_table("Kernel maps (Appendix F, Fig. 6): summary per arm", headers, rows, notes, key="kernels")]


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def _mean_map(store: Any, study: str, trials: list[TrialRecord], name: str) -> list[list[float]] | None:
    """The mean over ``trials`` of their ``name`` arrays (2-D, one shape), rescaled to [0, 1]."""
    import numpy as np

    from ablate.analyses.worker import load_array

    found = []
    for t in trials:
        path = store.path(study, t.trial_id, name)
        try:
            if store.exists(path):
                a = np.asarray(load_array(store, path), dtype=np.float64)
                if a.ndim == 2 and a.size and a.shape[0] <= 64 and a.shape[1] <= 64:
                    found.append(a)
        except (OSError, ValueError):
            continue
    if not found or len({a.shape for a in found}) != 1:
        return None
    m = np.mean(found, axis=0)
    top = float(np.nanmax(m))
    return np.round(m / top if top > 0 else m, 4).tolist()


# -- shape bias: Figure 5 -------------------------------------------------------------------------------------
def shape_parts(view: StudyView) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Figure 5 of the arms with shape-bias metrics (means over seeds) and their numbers."""
    from ablate.analyses.imagenet16 import CATEGORIES
    from ablate.analyses.shape_bias import figure5

    names = [n for n, _ in SHAPE_COLUMNS] + [f"shape_bias_{c}" for c in CATEGORIES]
    models, rows = {}, []
    for a in view.arms:
        ts = [t for t in a.arm.done if "shape_bias" in t.final]
        if not ts:
            continue
        s = _arm_scalars(ts, names)
        if len(models) < MAX_SHAPE_MODELS:
            label = escape(a.label)
            while label in models:  # two arms with one label: keep both
                label += " "
            models[label] = s
        rows.append([a.label] + [f"{s[n]:g}" if n == "shape_bias_images" and n in s else _fmt(s.get(n))
                                 for n, _ in SHAPE_COLUMNS] + [str(len(ts))])
    if not rows:
        return {}, []
    fig = _strip_template(figure5(models), max(380, 160 + 18 * len(CATEGORIES)))
    for axis in ("xaxis", "yaxis"):  # category names and the axis title fit
        fig["layout"].setdefault(axis, {})["automargin"] = True
    fig["layout"]["title"] = {"text": "Shape bias on cue-conflict images: per category, line at each model's mean "
                                      "(Fig. 5, App. C)", "x": 0.02, "font": {"size": 15}}
    notes = ["shape bias = shape decisions / (shape + texture decisions) over the cue-conflict images whose shape "
             "and texture differ (Geirhos et al.; the model-vs-human 16-class mapping); mean over the arm's seeds."]
    if len(rows) > len(models):
        notes.append(f"Figure 5 draws the first {len(models)} of {len(rows)} arms")
    headers = ["Arm"] + [h for _, h in SHAPE_COLUMNS] + ["seeds"]
    return {"shape_bias": fig}, [_table("Shape bias (Appendix C, Fig. 5)", headers, rows, notes, key="shape_bias")]


# -- all of one study ------------------------------------------------------------------------------------------
def has_erf_table(record: StudyRecord, names: set[str] | None = None) -> bool:
    """Whether the page shows Table 10 (then the plain r heatmap of ``figures.erf_figure`` is left out);
    ``names``: ``completed_metrics(record)`` when the caller has them."""
    return _declared(record, "erf") and _has(record, ERF_R, names)


def reads_artifacts(record: StudyRecord) -> bool:
    """Whether ``appendix_parts`` reads artifact arrays for this study (ERF, kernel maps): files that
    change without the database knowing, so its page blob is not kept (``dashboard.cache``)."""
    names = completed_metrics(record)
    return has_erf_table(record, names) or _has(record, "kernel_center3_share", names)


def appendix_parts(view: StudyView, artifacts: Path | str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(figures by key, tables) of the appendix analyses ``view``'s study has: nothing (and no import
    of numpy or the artifact store) for a study without them."""
    record = view.record
    names = completed_metrics(record)
    figs: dict[str, Any] = {}
    tables: list[dict[str, Any]] = []
    if has_erf_table(record, names):
        f, t = erf_parts(record, artifacts)
        figs |= f
        tables += t
    if _has(record, "kernel_center3_share", names):
        f, t = kernel_parts(view, artifacts)
        figs |= f
        tables += t
    if _has(record, "shape_bias", names):
        f, t = shape_parts(view)
        figs |= f
        tables += t
    return figs, tables
