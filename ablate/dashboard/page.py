"""The dashboard page: one self-contained HTML file (plotly.js, the page's script and style
inlined; works offline). Each study is one JSON blob of summaries, parsed and drawn only when the
study is shown: its figures (bounded whatever the number of trials), its table, and its trials in
columns (id, arm, seed, status, final metric). Full details (config, provenance, per-epoch metrics,
error) are embedded for a bounded sample of trials (those whose curves are drawn, the latest
failed and running); the served page (``serve.py``) fetches any trial's on demand instead.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.store_reads import FAILED, RUNNING, StudyRecord
from ablate.text import strip_controls

from ablate.dashboard.palette import STATUS_COLORS, STATUSES

if TYPE_CHECKING:
    from ablate.dashboard.view import StudyView

STATIC = Path(__file__).resolve().parent.parent / "static"
MAX_DETAILS = 20  # trials per study whose full details the static page embeds
MAX_DETAIL_FAILED = 10  # of which failed (the latest)
MAX_DETAIL_RUNNING = 5  # and running
MAX_ERROR = 4000  # characters of an error embedded


# -- text ------------------------------------------------------------------------------------------
def message_first(error: str) -> str:
    """An error as a person reads it: no terminal control codes, and the exception's own message
    first when the stored text is a traceback (older trials stored ``Traceback ...`` first)."""
    s = strip_controls(error).strip()
    if s.startswith("Traceback (most recent call last)"):
        lines = s.splitlines()
        i = len(lines) - 1
        while i > 0 and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
            i -= 1
        s = "\n".join([lines[i], ""] + lines[:i] + lines[i + 1:]).strip()
    return s if len(s) <= MAX_ERROR else s[:MAX_ERROR] + " …"


_PLAIN = frozenset({str, int, bool, type(None)})  # what ``_clean`` returns as it is


def _clean(obj: Any) -> Any:
    """NaN/inf are not JSON: they become null (Plotly leaves a gap); other floats keep 6
    significant digits (more than any plot or table shows; 0.1 + 0.2 is written 0.3)."""
    kind = type(obj)  # the exact types first (a page holds ~10^5 values); subclasses (numpy's) below
    if kind is float:
        if not math.isfinite(obj):
            return None
        v = float(f"{obj:.6g}")
        return int(v) if v.is_integer() and abs(v) < 1e15 else v
    if kind is str or kind is int or obj is None or kind is bool:
        return obj
    # the plain values of a list or dict are kept without a call each (a page holds ~10^5)
    if kind is list:
        return [v if type(v) in _PLAIN else _clean(v) for v in obj]
    if kind is dict:
        return {k: v if type(v) in _PLAIN else _clean(v) for k, v in obj.items()}
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        v = float(f"{obj:.6g}")
        return int(v) if v.is_integer() and abs(v) < 1e15 else v  # 3680000.0 is written 3680000
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _json_default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    raise TypeError(type(o).__name__)


def to_json(obj: Any) -> str:
    # no check for cycles: a blob is a tree of plain values (a cycle would still end, in RecursionError)
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_json_default, check_circular=False)


class Encoded(str):
    """A blob already written as JSON text (``to_json``): by a process that built part of the page."""


def json_script(el_id: str, obj: Any) -> str:
    text = (obj if isinstance(obj, Encoded) else to_json(obj)).replace("</", "<\\/").replace("<!--", "<\\!--")
    return f'<script type="application/json" id="{html.escape(el_id)}">{text}</script>'


_ID_RE = re.compile(r"[^A-Za-z0-9_.-]")


def dom_id(name: str) -> str:
    return _ID_RE.sub("_", name)


def _round(v: float | None) -> float | None:
    return float(f"{v:.6g}") if v is not None and math.isfinite(v) else None


# -- one study -------------------------------------------------------------------------------------
def detail_ids(view: StudyView) -> list[str]:
    """The trials whose full details the static page embeds (at most MAX_DETAILS): the latest
    failed, the running, then those of the arms whose curves are drawn."""
    from ablate.dashboard.figures import curve_arms  # the figures' code: only where a study is built

    failed = [t for t in reversed(view.record.trials) if t.status == FAILED]  # the latest registered first
    ids = [t.trial_id for t in failed[:MAX_DETAIL_FAILED]]
    ids += [t.trial_id for t in view.record.trials if t.status == RUNNING][:MAX_DETAIL_RUNNING]
    ids += [t.trial_id for a in curve_arms(view) for t in a.arm.trials]
    return list(dict.fromkeys(ids))[:MAX_DETAILS]


def curve_ids(view: StudyView) -> list[str]:
    """The trials whose per-epoch history the curves need."""
    from ablate.dashboard.figures import curve_arms

    return [t.trial_id for a in curve_arms(view) for t in a.arm.trials]


def table_json(view: StudyView) -> dict[str, Any]:
    """The study's table (the same as ``ablate table``), as plain cells the page renders, from the
    arms the view already grouped."""
    from ablate.tables import build_table

    t = build_table(view.record, raw=False, arms=view.table_arms)
    return {"title": strip_controls(t.title), "headers": [strip_controls(h) for h in t.headers], "groups": t.groups,
            # a row whose text is printable as a whole has nothing to strip (one test a row, not a cell)
            "rows": [r if "".join(r).isprintable() else [strip_controls(c) for c in r] for r in t.rows],
            "bold": [[i, j] for i, r in enumerate(t.bold) for j, b in enumerate(r) if b],
            "notes": [strip_controls(n) for n in t.notes]}


def trials_json(view: StudyView) -> dict[str, Any]:
    """Every trial of the study in columns: id, arm (index into ``arms``), seed, status (index
    into ``statuses``), final study metric."""
    arm_of = {id(t): a.index for a in view.arms + view.extra for t in a.arm.trials}
    code = {s: i for i, s in enumerate(STATUSES)}
    ts = view.record.trials
    extra = sorted({t.status for t in ts} - set(code))
    for s in extra:
        code[s] = len(code)
    return {"statuses": list(code), "id": [t.trial_id for t in ts], "arm": [arm_of[id(t)] for t in ts],
            "seed": [t.seed for t in ts], "status": [code[t.status] for t in ts],
            "value": [None if v is None or not math.isfinite(v) else float(f"{v:.6g}")  # = _round, inline (10^4)
                      for v in [t.final.get(view.metric) for t in ts]]}


def study_blob(view: StudyView, history: dict[str, dict[str, list[tuple[int, float]]]],
               artifacts: Path | str | None = None, details: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything the page shows of one study."""
    from ablate.dashboard.figures import curve_arms, pretty, study_figures

    tables: list[dict[str, Any]] = []
    figs = study_figures(view, history, artifacts, tables)
    counts = Counter(t.status for t in view.record.trials)
    curves = curve_arms(view)
    return {
        "name": view.name, "description": strip_controls(view.record.description or ""),
        "metric": view.metric, "metricLabel": pretty(view.metric), "mode": view.mode,
        "counts": {s: counts.get(s, 0) for s in list(STATUSES) + sorted(set(counts) - set(STATUSES))},
        "figs": _clean(figs), "table": table_json(view), "analysisTables": _clean(tables),
        "arms": [a.label for a in view.arms + view.extra], "baseline": view.baseline.index if view.baseline else None,
        "curveArms": [a.index for a in curves],
        "trials": trials_json(view), "details": _clean(details or {}),
    }


# -- the page --------------------------------------------------------------------------------------
_VERSION_RE = re.compile(r"plotly\.js(?: \([a-z -]+\))? v(\d+\.\d+\.\d+)")


def plotly_js() -> tuple[str, str]:
    """(source, description) of the plotly.js inlined into the page: the vendored cartesian bundle
    (scatter, bar, heatmap: all the page draws; a third of the full size, so a cold browser opens
    the page twice as fast) when its version matches plotly's own bundle, else plotly's full bundle."""
    f, what = _plotly_file()
    return (_read_text(f) if f is not None else plotly_bundle()), what


def plotly_js_bytes() -> bytes:
    """``plotly_js()``'s source as the page's UTF-8 bytes, copied from its file: not decoded into a
    ~3 MB string (it holds characters beyond Latin-1) and encoded again when the page is written."""
    f, _ = _plotly_file()
    return _file_bytes(f) if f is not None else plotly_bundle().encode("utf-8")


def _plotly_file() -> tuple[Path | None, str]:
    """(the file of ``plotly_js``'s source, or None for plotly's bundle where it is not on disk;
    its description)."""
    m = _VERSION_RE.search(plotly_bundle(head=300))  # the version only: the full bundle is 4.6 MB
    for f in sorted(STATIC.glob("plotly-cartesian-*.min.js")):
        with f.open(encoding="utf-8") as text:
            s = _VERSION_RE.search(text.read(300))
        if m and s and s.group(1) == m.group(1):
            return f, f"plotly.js {s.group(1)} (cartesian)"
    return _plotly_bundle_file(), f"plotly.js {m.group(1) if m else '?'}"


def _read_text(f: Path) -> str:
    return f.read_text(encoding="utf-8")


def _file_bytes(f: Path) -> bytes:
    """``f``'s text as ``_read_text`` gives it, encoded in UTF-8: the file's bytes as they are unless
    they hold a carriage return (which reading as text turns into a newline)."""
    data = f.read_bytes()
    return data if b"\r" not in data else _read_text(f).encode("utf-8")


def plotly_bundle(head: int | None = None) -> str:
    """plotly's own plotly.min.js, as ``plotly.offline.get_plotlyjs`` returns it (or its first
    ``head`` characters), read from the package's data without importing plotly (whose import reads
    package metadata: ~0.1 s of every ``dashboard --out``); through plotly itself where the file is
    not on disk (a zipped install)."""
    f = _plotly_bundle_file()
    if f is not None:
        with f.open(encoding="utf-8") as text:
            return text.read() if head is None else text.read(head)
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()[:head]


def _plotly_bundle_file() -> Path | None:
    """plotly's plotly.min.js in the installed package, or None where it is not on disk."""
    from importlib.util import find_spec

    spec = find_spec("plotly")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        f = Path(folder) / "package_data" / "plotly.min.js"
        if f.is_file():
            return f
    return None


def _static(name: str) -> str:
    return _read_text(STATIC / name)


@dataclass
class StudyCounts:
    """What the page's header and overview show of a study besides its blob: its trials by status."""

    name: str
    statuses: Counter

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @classmethod
    def of(cls, record: StudyRecord) -> StudyCounts:
        return cls(record.name, Counter(t.status for t in record.trials))


def build_page(records: list[StudyRecord] | list[StudyCounts], blobs: dict[str, dict[str, Any] | Encoded], *,
               source: str = "", refresh: int = 0, served: bool = False, version: str = "",
               now: datetime | None = None) -> str:
    """The whole page: ``blobs`` (study name -> ``study_blob``, or its ``Encoded`` JSON) for
    ``records`` (or their ``StudyCounts``). ``served``: the page asks the server for trial details
    and curves, and (``refresh`` > 0) for a new version every that many seconds, reloading only
    when the results changed."""
    return "".join(page_parts(records, blobs, source=source, refresh=refresh, served=served,  # type: ignore[arg-type]
                              version=version, now=now))


def page_parts(records: list[StudyRecord] | list[StudyCounts], blobs: dict[str, dict[str, Any] | Encoded], *,
               source: str = "", refresh: int = 0, served: bool = False, version: str = "",
               now: datetime | None = None, as_bytes: bool = False) -> list[str | bytes]:
    """``build_page``'s text in parts, to be written one after another: joined, the page is a copy of
    ~3 MB in 2-byte characters (plotly.js and dashboard.js hold characters beyond Latin-1), made and
    encoded again (~0.015 s of a page whose studies all come from the cache). ``as_bytes``: the
    static scripts (plotly.js, dashboard.js) are parts in UTF-8 bytes, copied from their files, the
    others text (a file written in binary: each text part encoded in UTF-8, the bytes as they are)."""
    from ablate.table_css import TABLE_CSS

    e = html.escape
    now = now or datetime.now(timezone.utc)
    records = [r if isinstance(r, StudyCounts) else StudyCounts.of(r) for r in records]
    options = "".join(f'<option value="{e(dom_id(r.name))}">{e(r.name)} ({r.total} trials)</option>'
                      for r in records)
    picker = (f'<label>Study <select id="study-picker">{options}</select></label>' if records
              else '<span class="muted">no studies</span>')
    empty = ("" if records else
             '<div class="card"><p>No studies in this database yet. Run one with '
             "<code>ablate run studies/dilation.yaml --profile demo</code>, then reload.</p></div>")
    js: str | bytes = plotly_js_bytes() if as_bytes else plotly_js()[0]
    script: str | bytes = _file_bytes(STATIC / "dashboard.js") if as_bytes else _static("dashboard.js")
    conf = {"served": served, "refresh": int(refresh) if served else 0, "version": version,
            "names": {dom_id(r.name): r.name for r in records},
            "statusColors": STATUS_COLORS}
    tools = ('<span class="tools">'
             '<label title="Which per-epoch metric the curves show">Curves <select id="curve-metric"></select></label>'
             '<label title="±1 std over seeds around each curve"><input type="checkbox" id="bands"> bands</label>'
             '<button id="reset-zoom" title="Reset the zoom of every plot">reset zoom</button>'
             '<button id="save-png" title="Download every plot of this study as PNG">PNG</button>'
             "</span>")
    sections = "".join(f'<section class="study" data-study="{e(dom_id(r.name))}" hidden></section>' for r in records)
    return [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>ablate dashboard</title><link rel=\"icon\" href=\"data:,\">",  # no favicon request
        f"<style>{TABLE_CSS}{_static('dashboard.css')}</style>",
        "<script>", js, "</script><script>performance.mark('ablate:plotly-loaded')</script>",
        "</head><body>",
        f'<header><h1>ablate dashboard</h1>{picker}{tools}<span class="db">{e(source)} · '
        f"generated {now.strftime('%Y-%m-%d %H:%M:%S UTC')}"
        f"{f' · checks for new results every {refresh}s' if served and refresh else ''}</span></header>",
        "<main>", empty,
        overview_html(records),
        sections,
        json_script("ablate-conf", conf),
        *(json_script(f"study-{dom_id(r.name)}", blobs[r.name]) for r in records),
        "<script>", script, "</script>",
        "</main></body></html>\n",
    ]


def overview_html(records: list[StudyCounts]) -> str:
    """Trials per study by status as plain HTML bars (no plot to draw before the study's own);
    a click on a study shows it."""
    if not records:
        return ""
    e = html.escape
    top = max(r.total for r in records) or 1
    rows = []
    for r in records:
        c = r.statuses
        segs = "".join(f'<i style="width:{100 * c[s] / top:.3f}%;background:{STATUS_COLORS.get(s, "#999")}" '
                       f'title="{c[s]} {e(s)}"></i>' for s in list(STATUSES) + sorted(set(c) - set(STATUSES)) if c.get(s))
        counts = ", ".join(f"{c[s]} {e(s)}" for s in list(STATUSES) + sorted(set(c) - set(STATUSES)) if c.get(s))
        rows.append(f'<tr data-study="{e(dom_id(r.name))}"><th>{e(r.name)}</th><td class="bar">{segs}</td>'
                    f'<td class="muted">{r.total} trials{": " + counts if counts else ""}</td></tr>')
    return f'<table id="overview"><caption>Trials per study</caption>{"".join(rows)}</table>'


def safe_url(url: str) -> str:
    """The database URL without a password."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)

