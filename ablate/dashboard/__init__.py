"""One self-contained, interactive HTML page over the result database (Plotly, plotly.js inlined).

For each study, plots chosen from what varies (``figures.py``): every arm against the baseline with
its confidence interval, the metric against each declared axis, a heatmap when two axes form a
grid, against params / FLOPs / kernel size only when they vary, per-epoch curves, the appendix
analyses (``appendix.py``: Figures 1, 5 and 6, Table 10); its table (the same as ``ablate table``)
and its trials, where a click shows a trial's config, provenance, per-epoch metrics and error. One
toolbar serves the whole page.

The page embeds summaries, not every point (``page.py``): final values per trial, curves for a
bounded sample of arms, full details for a bounded sample of trials. ``serve.py`` builds it once
and answers from a cache until the results change, sending curves and trial details on demand.
Reading is ``data.py``'s (final values by the store's aggregate queries, history only for the
trials drawn). Nothing here imports torch, timm or Ray.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ablate._gc import paused_gc
from ablate.store_reads import Reader, StudyRecord

from ablate.dashboard.data import load_details, load_history, load_studies, version
from ablate.dashboard.page import (Encoded, StudyCounts, build_page, curve_ids, detail_ids, page_parts, plotly_js,
                                  safe_url, study_blob, to_json)

if TYPE_CHECKING:
    from ablate.dashboard.data import History
    from ablate.dashboard.view import StudyView

__all__ = ["ImageExportError", "build", "build_page", "export_images", "make_server",
           "page_of_records", "plotly_js", "report", "study_figures", "study_view", "write_report"]


def __getattr__(name: str) -> Any:
    """The figures' and views' code is imported where a study is built (``study_figures``,
    ``study_view`` here too): a page whose studies all come from the cache needs none of it."""
    if name == "study_figures":
        from ablate.dashboard.figures import study_figures

        return study_figures
    if name == "study_view":
        from ablate.dashboard.view import study_view

        return study_view
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _with_details(view: StudyView, history: History, ids: list[str],
                  store: Reader | None = None) -> dict[str, dict[str, Any]]:
    from ablate.dashboard.data import detail

    by_id = {t.trial_id: t for t in view.record.trials}
    trials = [by_id[i] for i in ids if i in by_id]
    if store is not None:
        trials = load_details(store, view.name, trials, history)
    else:
        trials = [dataclasses.replace(t, history=history.get(t.trial_id, {})) for t in trials]
    return {t.trial_id: detail(view.name, t) for t in trials}


def _study_blob(store: Reader, view: StudyView, artifacts: Path | str | None, served: bool = False) -> dict[str, Any]:
    """One study's blob of the page: its figures and table, the curves it draws, and (a static page)
    the trials it shows whole; a served page asks the server for those."""
    ids = [] if served else detail_ids(view)
    hist = load_history(store, view.name, list(dict.fromkeys(curve_ids(view) + ids)))
    return study_blob(view, hist, artifacts, None if served else _with_details(view, hist, ids, store))


def build(store: Reader, *, names: Iterable[str] | None = None, refresh: int = 0, served: bool = False,
          artifacts: Path | str | None = None) -> tuple[str, dict[str, StudyView]]:
    """(the page, each study's view by name) of ``store``'s studies (all, or ``names``). The cyclic
    garbage collector is paused meanwhile (``_gc.paused_gc``): the build makes ~10^5 objects
    per 10^4 trials and no cycles, and each collection walked them all (a quarter of the build)."""
    parts, views = _build(store, names, refresh, served, artifacts)
    return "".join(parts), views  # type: ignore[arg-type]


def _build(store: Reader, names: Iterable[str] | None, refresh: int, served: bool,
           artifacts: Path | str | None) -> tuple[list[str | bytes], dict[str, StudyView]]:
    """``build``'s page in parts (``page.page_parts``), and the views."""
    from ablate.dashboard.view import study_view

    with paused_gc(), store.kept():  # ~8 reads a study: one connection
        stamp = version(store) if served else ""
        records = load_studies(store, names)
        views = {r.name: study_view(r) for r in records}
        blobs = {r.name: _study_blob(store, views[r.name], artifacts, served) for r in records}
        return (page_parts(records, blobs, source=safe_url(store.url), refresh=refresh, served=served,
                           version=stamp), views)


def report(store: Reader, *, names: Iterable[str] | None = None, refresh: int = 0,
           artifacts: Path | str | None = None, workers: int = 1, cache: bool = False,
           built: list[str] | None = None) -> str:
    """The static dashboard page (heatmaps from the artifact folder ``artifacts``, default
    ablate.artifacts.artifacts_root()). ``workers=2``: half of the studies are built in a forked
    process (``_forked_blobs``) where that is safe (``_can_fork``); the page is the same. The CLI
    asks ``page_workers()``. ``cache``: studies unchanged since an earlier page of this database
    are taken from ``dashboard.cache`` (the page is the same), the others built and kept; ``built``
    gets the names of the studies built (not taken from the cache)."""
    return "".join(_report_parts(store, names=names, refresh=refresh, artifacts=artifacts,  # type: ignore[arg-type]
                                 workers=workers, cache=cache, built=built))


def _report_parts(store: Reader, *, names: Iterable[str] | None = None, refresh: int = 0,
                  artifacts: Path | str | None = None, workers: int = 1, cache: bool = False,
                  built: list[str] | None = None, as_bytes: bool = False) -> list[str | bytes]:
    """``report``'s page in parts (``page.page_parts``; ``as_bytes`` there)."""
    from ablate.dashboard.cache import BlobCache

    kept = BlobCache.open(store, artifacts) if cache else None
    fork = workers > 1 and _can_fork(store)
    have = {n: count for n, _, count in store.studies()}
    order = list(have) if names is None else [n for n in names if n in have]  # = load_studies' order
    unique = list(dict.fromkeys(order))
    hits = kept.load(unique) if kept is not None else {}
    missing = [n for n in unique if n not in hits]
    made = _forked_blobs(store, missing, have, artifacts) if fork else _blobs(store, missing, artifacts)
    if kept is not None:
        kept.save(made)
    if built is not None:
        built.extend(made)
    got = hits | {n: (counts, blob) for n, (counts, blob, _) in made.items()}
    return page_parts([got[n][0] for n in order], {n: got[n][1] for n in order}, source=safe_url(store.url),
                      as_bytes=as_bytes)


def page_workers() -> int:
    """How many processes ``dashboard --out`` builds its page with: 2 where a second core is free
    (two CPUs or more, and a 1-minute load average under CPUs - 1/2: it counts this command itself,
    and a benchmark running commands one after another keeps it near 1), else 1. Two processes cost
    more CPU in all (0.58-0.66 s against 0.49-0.57 s for a 10,000-trial page, measured on a loaded
    machine) and halve the wall time only when the second one gets a core of its own: on a machine
    already busy they are slower."""
    cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return 1
    return 2 if cpus >= 2 and load < cpus - 0.5 else 1


def _can_fork(store: Reader) -> bool:
    """Whether a copy of this process may build part of the page: a Unix fork from a process with
    one thread (a fork copies no other thread, so a lock another thread held would never be
    released in the copy), reading an SQLite file (each process opens its own connection; a
    server's connection pool must not be shared with a copy) with no connection kept open (inside
    ``Reader.kept``) that the copy would inherit."""
    import threading

    from ablate.store_reads import _SqliteSQL

    sql = getattr(store, "_sql", None)
    return (hasattr(os, "fork") and threading.active_count() == 1 and isinstance(sql, _SqliteSQL)
            and not getattr(sql._idle, "depth", 0) and getattr(sql._idle, "con", None) is None)


def _blobs(store: Reader, names: list[str], artifacts: Path | str | None) -> dict[str, tuple[StudyCounts, Encoded, bool]]:
    """{name: (its trials by status, its blob as JSON, whether it may be kept: it read no artifact
    array)} of the static page's studies ``names`` (which the database holds). One study at a time,
    read, built, encoded and let go before the next: the build's memory is one study's, so a fresh
    process faults in under half the pages it did with every study read first (~2,200 page faults
    instead of ~4,900 at 10,000 trials, and ~10 MB less)."""
    if not names:
        return {}
    from ablate.dashboard.appendix import reads_artifacts
    from ablate.dashboard.data import load_study
    from ablate.dashboard.view import study_view

    out: dict[str, tuple[StudyCounts, Encoded, bool]] = {}
    with paused_gc(), store.kept():
        for name in names:
            r = load_study(store, name)
            out[name] = (StudyCounts.of(r), Encoded(to_json(_study_blob(store, study_view(r), artifacts))),
                         not reads_artifacts(r))
            del r
    return out


def _import_build_code() -> None:
    """Import what building a study's blob imports (each where it is first needed)."""
    import importlib

    for name in ("ablate.dashboard.appendix", "ablate.dashboard.figures", "ablate.dashboard.view", "ablate.tables",
                 "ablate.stats", "ablate.tdist", "ablate.show", "ablate.provenance"):
        importlib.import_module(name)


def _forked_blobs(store: Reader, names: list[str], sizes: dict[str, int],
                  artifacts: Path | str | None) -> dict[str, tuple[StudyCounts, Encoded, bool]]:
    """``_blobs`` of ``names`` shared between this process and a fork of it (a machine's second core:
    a 10,000-trial page is ~0.4 s of Python, nearly all of it per study). The studies are split by
    trial count (``sizes``); the fork sends its blobs back through a pipe, and if it fails for any
    reason this process builds its share itself. Each process reads the database through its own
    connection (none is open at the fork: ``store.studies()`` closes its own)."""
    if len(names) < 2:
        return _blobs(store, names, artifacts)
    import pickle

    shares: tuple[list[str], list[str]] = ([], [])
    load = [0, 0]
    for n in sorted(names, key=lambda n: (-sizes[n], n)):  # the largest first, each to the smaller share
        i = load.index(min(load))
        shares[i].append(n)
        load[i] += sizes[n]
    _import_build_code()  # once, before the fork: both processes use it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the fork: build its share, send it, and leave without running this process's exit code
        try:
            os.close(read)
            data = pickle.dumps(_blobs(store, shares[1], artifacts), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            data = b""
        try:
            with os.fdopen(write, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(write)
    try:
        mine = _blobs(store, shares[0], artifacts)
    finally:
        with os.fdopen(read, "rb") as f:
            data = f.read()
        os.waitpid(pid, 0)
    try:
        theirs = pickle.loads(data) if data else None
    except Exception:
        theirs = None
    if theirs is None or set(theirs) != set(shares[1]):
        theirs = _blobs(store, shares[1], artifacts)
    return mine | theirs


def write_report(store: Reader, out: str | Path, **kw: Any) -> Path:
    """``report``'s page written to ``out`` in UTF-8, part after part (``page.page_parts``), its static
    scripts copied as bytes (``as_bytes``: ~1.5 MB of plotly.js neither decoded nor encoded)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = _report_parts(store, **kw, as_bytes=True)
    with out.open("wb") as f:
        for part in parts:
            f.write(part if isinstance(part, bytes) else part.encode("utf-8"))
    return out


def page_of_records(records: list[StudyRecord], *, source: str = "", artifacts: Path | str | None = None) -> str:
    """The static page of in-memory studies (their trials' ``history`` gives the curves)."""
    from ablate.dashboard.view import study_view

    blobs = {}
    for r in records:
        v = study_view(r)
        ids = detail_ids(v)
        hist = {t.trial_id: t.history for t in r.trials if t.history}
        blobs[r.name] = study_blob(v, hist, artifacts, _with_details(v, hist, ids))
    return build_page(records, blobs, source=source)


def make_server(*args: Any, **kw: Any):
    from ablate.dashboard.serve import make_server as make

    return make(*args, **kw)


# -- images ---------------------------------------------------------------------------------------
class ImageExportError(RuntimeError):
    """PNG/SVG export cannot run here (no kaleido, or no Chromium for it)."""


def export_images(store_or_records: Reader | list[StudyRecord], out_dir: str | Path,
                  formats: Iterable[str] = ("png", "svg"), *, width: int = 900, height: int = 500,
                  scale: float = 1.0, artifacts: Path | str | None = None) -> list[Path]:
    """Every plot of every study as ``out_dir/<study>/<plot>.<fmt>`` via kaleido and a local Chromium.

    kaleido 1.x finds Chromium on PATH (Debian's ``chromium``) or at ``$BROWSER_PATH``; it is told to
    load no MathJax and uses the plotly.js shipped with the plotly package, so it needs no network."""
    from ablate.dashboard.figures import overview_figure, study_figures
    from ablate.dashboard.page import _clean, dom_id
    from ablate.dashboard.view import study_view

    try:
        import kaleido
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImageExportError("image export needs the kaleido package (pip install kaleido==1.5.0)") from e
    store = store_or_records if isinstance(store_or_records, Reader) else None
    records = load_studies(store) if store is not None else list(store_or_records)  # type: ignore[arg-type]
    out_dir = Path(out_dir)
    specs, paths = [], []
    for r in records:
        v = study_view(r)
        hist = load_history(store, r.name, curve_ids(v)) if store is not None else \
            {t.trial_id: t.history for t in r.trials if t.history}
        figs = {"overview": overview_figure([r])} | study_figures(v, hist, artifacts)
        for key, fig in figs.items():
            fig = _clean({k: val for k, val in fig.items() if not k.startswith("_")})
            fig["layout"] = {**fig["layout"], "height": fig["layout"].get("height", height)}
            for fmt in formats:
                p = out_dir / dom_id(r.name) / f"{dom_id(key.replace(':', '_'))}.{fmt}"
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
