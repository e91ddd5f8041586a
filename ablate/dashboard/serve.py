"""``ablate dashboard --serve``: the page over HTTP on loopback, built once and answered from a
cache until the results change (``Store.results_version``: a few aggregate queries, milliseconds
at 100,000 trials), with a small JSON API the page calls on demand:

* ``GET /`` the page (rebuilt only when the version changed since the last build);
* ``GET /api/version`` ``{"version": ...}``, which the page polls to reload only on new results;
* ``GET /api/trial?study=S&id=T`` one trial whole (``ablate show --format json``'s object);
* ``GET /api/curves?study=S&metric=M&arms=1,2,3`` the per-epoch figure of those arms.

Stdlib http.server only. Database text never reaches the status line or a header.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ablate.store_reads import Reader
from ablate.text import strip_controls

from ablate.dashboard.data import detail, load_details, load_history, version
from ablate.dashboard.figures import curve_arms, curves_figure
from ablate.dashboard.page import _clean, to_json
from ablate.dashboard.view import StudyView

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class PageCache:
    """The built page and the study views it came from, for one results version."""

    store: Reader
    refresh: int = 10
    artifacts: Path | str | None = None
    version: str | None = None
    page: bytes = b""
    views: dict[str, StudyView] = field(default_factory=dict)
    builds: int = 0  # how many times the page was built (tests and the log read it)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> tuple[bytes, dict[str, StudyView]]:
        """The page for the results as they are now: the cached one unless they changed."""
        from ablate.dashboard import build

        now = version(self.store)
        with self.lock:  # one build at a time; requests that waited find it built
            if now != self.version:
                page, views = build(self.store, refresh=self.refresh, served=True, artifacts=self.artifacts)
                self.page, self.views, self.version = page.encode("utf-8"), views, now
                self.builds += 1
            return self.page, self.views


def _trial(cache: PageCache, q: dict[str, str]) -> dict[str, Any] | None:
    _, views = cache.current()
    view = views.get(q.get("study", ""))
    if view is None:
        return None
    rec = next((t for t in view.record.trials if t.trial_id == q.get("id")), None)
    if rec is None:
        return None
    hist = load_history(cache.store, view.name, [rec.trial_id])
    return detail(view.name, load_details(cache.store, view.name, [rec], hist)[0])


def _curves(cache: PageCache, q: dict[str, str]) -> dict[str, Any] | None:
    _, views = cache.current()
    view = views.get(q.get("study", ""))
    if view is None:
        return None
    try:
        picked = [int(x) for x in q.get("arms", "").split(",") if x.strip()]
    except ValueError:
        return None
    arms = curve_arms(view, picked)
    ids = [t.trial_id for a in arms for t in a.arm.trials]
    fig = curves_figure(view, arms, load_history(cache.store, view.name, ids), q.get("metric") or view.metric,
                        bands=q.get("bands") == "1")
    return {"figure": _clean(fig)}


def make_server(store: Reader, host: str = "127.0.0.1", port: int = 8050, refresh: int = 10,
                artifacts: Path | str | None = None):
    """A threading HTTP server on ``host`` (loopback only) answering from a ``PageCache``
    (``server.cache``)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if host not in LOOPBACK:
        raise ValueError(f"--host: a loopback address ({', '.join(LOOPBACK)}), got '{strip_controls(host, False)}': "
                         "the dashboard has no authentication")
    cache = PageCache(store, refresh, artifacts)

    class Handler(BaseHTTPRequestHandler):
        def _send(self, body: bytes, ctype: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            parts = urlsplit(self.path)
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            try:
                if parts.path in ("/", "/index.html", "/report.html"):
                    self._send(cache.current()[0], "text/html; charset=utf-8")
                    return
                if parts.path == "/api/version":
                    obj: Any = {"version": version(store)}
                elif parts.path == "/api/trial":
                    obj = _trial(cache, q)
                elif parts.path == "/api/curves":
                    obj = _curves(cache, q)
                else:
                    self.send_error(404, "Not Found", "the dashboard is at /")
                    return
                if obj is None:
                    self.send_error(404, "Not Found", "no such study, trial or arm")
                    return
                self._send(to_json(obj).encode("utf-8"), "application/json")
            except Exception as e:  # keep serving; show what broke
                # the status line and headers carry fixed text only: an exception's message can hold text
                # from the database (a CRLF would inject headers); it goes into the HTML-escaped body
                self.send_error(500, "Internal Server Error",
                                f"could not build the dashboard: {type(e).__name__}: {strip_controls(e)}")

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one line per request is noise here
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.cache = cache  # type: ignore[attr-defined]
    return server
