"""The ``ablate`` command: thin typer wrappers over the library.

Bad input (a wrong study file, missing data) prints one message naming the file, the field and
what was expected, and exits 2 without a traceback and without writing to the database.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Ablation studies for large-kernel CNNs (RepLKNet, CVPR 2022): declare a study in a YAML "
    "file, run it on Ray, keep every result in SQL, and print the paper's tables.\n\n"
    "Typical session:\n\n"
    "  ablate plan studies/dilation.yaml --profile demo   # trials, params, FLOPs; trains nothing\n\n"
    "  ablate run studies/dilation.yaml --profile demo    # train what is missing, print the table\n\n"
    "  ablate table dilation --format latex               # the table again, for the paper",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()

DB_HELP = ("Result database, any SQLAlchemy URL (sqlite:///path.db, postgresql://user@host/db). "
           "Default: $ABLATE_DB, else the SQLite file ./ablate.db in the current directory.")
PROFILE_HELP = "Profile of the study file to apply (e.g. 'demo' for CPU minutes, 'paper' for Appendix A)."


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _user_errors():
    """Exceptions that are the user's input, not ablate's bugs."""
    from ablate.data import DatasetError
    from ablate.orchestrate import InitFromError
    from ablate.runner import ResourceError
    from ablate.study import StudyError

    return (StudyError, DatasetError, InitFromError, ResourceError)


def _plan(file: Path, profile: Optional[str]):
    from ablate.plan import make_plan

    try:
        return make_plan(file, profile)
    except _user_errors() as e:
        _fail(str(e))
    except (TypeError, ValueError) as e:  # the model rejected its kwargs
        _fail(f"{file}: model.kwargs: arguments the model accepts ({e})")


def _store(db: Optional[str]):
    from ablate.store import Store

    return Store(db)


@app.command()
def plan(
    file: Path = typer.Argument(..., help="Study file (YAML)."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help=PROFILE_HELP),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
) -> None:
    """Show the trials a study expands to, with params and FLOPs (multiply-adds); trains nothing."""
    from ablate.flops import human

    p = _plan(file, profile)
    if fmt == "json":
        out.print_json(json.dumps({"study": p.study.name, "profile": profile, "trials": p.rows()}))
        return
    s = p.study
    axes = [k for k in p.trials[0].trial.params]
    t = Table(title=f"{s.name}{f' (profile: {profile})' if profile else ''}: {len(p.trials)} trials, "
                    f"{s.recipe.epochs} epochs each, {s.resources.cpus:g} CPU / {s.resources.gpus:g} GPU per trial")
    t.add_column("trial id")
    for a in axes:
        t.add_column(a.split(".")[-1])
    t.add_column("Params", justify="right")
    t.add_column(f"FLOPs @{s.dataset.image_size}", justify="right")
    for pt in p.trials:
        t.add_row(pt.trial.id, *[json.dumps(pt.trial.params[a]) for a in axes], human(pt.n_params), human(pt.flops))
    out.print(t)


@app.command()
def run(
    file: Path = typer.Argument(..., help="Study file (YAML)."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help=PROFILE_HELP),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP, envvar="ABLATE_DB"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join "
                                          "(default $RAY_ADDRESS, else a local Ray started by ablate).",
                                          envvar="RAY_ADDRESS"),
    fmt: str = typer.Option("md", "--format", "-f", help="Format of the table printed at the end: md, csv, latex."),
) -> None:
    """Run a study: train every trial not yet completed (reruns skip finished ones), store results, print the table."""
    from ablate.orchestrate import run_study
    from ablate.progress import ProgressSink
    from ablate.tables import render

    p = _plan(file, profile)
    from ablate.data import check_dataset

    try:
        check_dataset(p.study.dataset.model_dump())
    except _user_errors() as e:
        _fail(f"{file}: dataset: {e}")
    store = _store(db)
    try:
        with ProgressSink(store, p, console=err) as sink:
            summary = run_study(file, profile, store=store, sink=sink, address=address, plan=p)
    except _user_errors() as e:
        _fail(f"{file}: {e}")
    err.print(f"{summary.total} trials: {summary.skipped} already completed, {summary.ran} run now, "
              f"{summary.completed} completed, {summary.failed} failed. Results in {store.url}")
    sys.stdout.write(render(store.load(p.study.name), fmt))
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def table(
    study: str = typer.Argument(..., help="Study name (the 'name' in its file)."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP, envvar="ABLATE_DB"),
    fmt: str = typer.Option("md", "--format", "-f", help="md, csv (one row per arm, with trial ids), latex "
                            "(booktabs) or html."),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Print a study's table from the result database: mean ± std over seeds, Δ and a paired test
    against the baseline, best in bold."""
    from ablate.tables import FORMATS, render

    if fmt not in FORMATS:
        _fail(f"--format: one of {', '.join(FORMATS)}, got '{fmt}'")
    text = render(_load_study(_store(db), study), fmt)
    if out_file:
        out_file.write_text(text)
        err.print(f"wrote {out_file}")
    else:
        sys.stdout.write(text)


@app.command()
def studies(db: Optional[str] = typer.Option(None, "--db", help=DB_HELP, envvar="ABLATE_DB")) -> None:
    """List the studies in the result database."""
    store = _store(db)
    t = Table(title=f"Studies in {store.url}")
    for c in ("name", "trials", "description"):
        t.add_column(c)
    for name, desc, n in store.studies():
        t.add_row(name, str(n), desc)
    out.print(t)


@app.command()
def models(
    input_size: int = typer.Option(224, "--input-size", min=8, help="Square input resolution for FLOPs."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
) -> None:
    """List the model zoo with params and FLOPs (multiply-adds) of the deployed (re-parameterized) form."""
    from ablate.flops import human
    from ablate.zoo import zoo_rows

    if fmt not in ("table", "json"):
        _fail(f"--format: one of table, json, got '{fmt}'")
    rows = zoo_rows(input_size)
    if fmt == "json":
        out.print_json(json.dumps(rows))
        return
    t = Table(title=f"Model zoo at {input_size}x{input_size}, 1000 classes: params and FLOPs (multiply-adds) "
                    "of the deploy form. A study builds one with model.name and model.kwargs.",
              caption="≠: the paper's figure is not this count rounded or truncated (Table 12's dense rows "
                      "print 319M / 361M; the model they describe has 466.5M / 669.1M).")
    t.add_column("model")
    t.add_column("model.name / model.kwargs")
    t.add_column("Params", justify="right", no_wrap=True)
    t.add_column("FLOPs", justify="right", no_wrap=True)
    t.add_column("paper")
    for r in rows:
        kw = " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in r["kwargs"].items())
        mark = {True: "", False: " ≠", None: ""}
        paper = " / ".join(x + mark[ok] for x, ok in ((r["paper_params"], r["params_as_printed"]),
                                                      (r["paper_flops"], r["flops_as_printed"])) if x)
        t.add_row(r["label"], f"{r['model']} {kw}".strip(), human(r["params"]), human(r["flops"]),
                  f"{paper} ({r['source']})" if paper else r["source"])
    out.print(t)


def _load_study(store, study: str, history: bool = False):
    try:
        return store.load(study, history=history)
    except KeyError:
        known = ", ".join(n for n, _, _ in store.studies()) or "none yet"
        _fail(f"study '{study}' is not in {store.url} (studies there: {known})")


@app.command()
def export(
    study: str = typer.Argument(..., help="Study name (the 'name' in its file)."),
    out_file: Path = typer.Option(..., "--out", "-o", help="File to write."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="csv or parquet (default: from --out's "
                                      "suffix, else csv)."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP, envvar="ABLATE_DB"),
) -> None:
    """Write every trial and metric of a study in long format (one row per trial, epoch and metric), for pandas."""
    from ablate.export import EXPORT_FORMATS, export as write_export

    if fmt is not None and fmt not in EXPORT_FORMATS:
        _fail(f"--format: one of {', '.join(EXPORT_FORMATS)}, got '{fmt}'")
    record = _load_study(_store(db), study, history=True)
    n = write_export(record, out_file, fmt)
    err.print(f"wrote {n} rows to {out_file}")


@app.command()
def dashboard(
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP, envvar="ABLATE_DB"),
    out_file: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML page to write."),
    serve: bool = typer.Option(False, "--serve", help="Serve the page instead of writing it; it is regenerated "
                               "on every request and reloads itself while trials run."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on (with --serve)."),
    port: int = typer.Option(8050, "--port", help="Port to serve on (with --serve)."),
    refresh: int = typer.Option(10, "--refresh", min=0, help="Seconds between reloads while trials run "
                                "(with --serve; 0: never)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Also write every plot as PNG and SVG under "
                                          "this folder (kaleido + a local Chromium)."),
    artifacts: Optional[Path] = typer.Option(None, "--artifacts", help="Trial artifact folder, for ERF / kernel "
                                             "heatmaps saved as erf.npy / kernel.npy (default: $ABLATE_ARTIFACTS, "
                                             "else ./ablate-artifacts)."),
) -> None:
    """One self-contained interactive HTML page of every study: tables, learning curves, Top-1 against
    kernel size / FLOPs / params, ERF heatmaps, failed trials."""
    from ablate import dashboard as dash

    store = _store(db)
    if images is not None:
        try:
            paths = dash.export_images(store.load_many(history=True), images, artifacts=artifacts)
        except dash.ImageExportError as e:
            _fail(str(e), 1)
        err.print(f"wrote {len(paths)} images under {images}")
    if serve:
        try:
            server = dash.make_server(store, host, port, refresh, artifacts)
        except OSError as e:
            _fail(f"--port: a free port on {host} ({e})")
        err.print(f"serving the dashboard of {store.url} at http://{host}:{server.server_address[1]}/ (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        return
    dash.write_report(store, out_file, artifacts=artifacts)
    err.print(f"wrote {out_file}")


recipes_app = typer.Typer(help="Appendix A training recipes: `ablate recipes` lists them, "
                          "`ablate recipes show NAME` prints every resolved value.", no_args_is_help=False,
                          invoke_without_command=True)
app.add_typer(recipes_app, name="recipes")


@recipes_app.callback()
def recipes_list(ctx: typer.Context) -> None:
    """List the named recipes (use one with `recipe: {preset: NAME}` in a study file)."""
    if ctx.invoked_subcommand is not None:
        return
    from ablate.recipes import PRESETS, total_batch

    t = Table(title="Recipes (Appendix A); every field can be overridden in the study's recipe")
    t.add_column("name", no_wrap=True)
    for c in ("opt", "lr", "epochs", "batch", "augmentation"):
        t.add_column(c, overflow="fold")
    for name, r in PRESETS.items():
        aug = ", ".join(x for x in (r["auto_augment"] and "RandAugment", r["mixup"] and f"mixup {r['mixup']}",
                                    r["cutmix"] and f"cutmix {r['cutmix']}", r["ema_momentum"] and "EMA",
                                    r["drop_path_rate"] and f"drop path {r['drop_path_rate']}") if x) or "crop + flip"
        t.add_row(name, r["opt"], f"{r['lr']:g}", str(r["epochs"]), f"{r['batch_size']}x{r['gpus']}={total_batch(r)}",
                  aug)
    out.print(t)
    out.print("`ablate recipes show NAME` prints every value and the Appendix A text it comes from.")


@recipes_app.command("show")
def recipes_show(name: str = typer.Argument(..., help="Recipe name, e.g. replknet-in1k."),
                 fmt: str = typer.Option("table", "--format", "-f", help="table or json.")) -> None:
    """Every resolved value of one recipe, as a study's trial will see it."""
    from ablate.recipes import ASSUMED, PRESETS, SOURCES
    from ablate.study import RecipeSpec

    if name not in PRESETS:
        _fail(f"recipe '{name}': one of {', '.join(PRESETS)}")
    resolved = RecipeSpec(preset=name).model_dump(mode="json")
    if fmt == "json":
        sys.stdout.write(json.dumps(resolved, indent=2) + "\n")
        return
    t = Table(title=f"{name}: {SOURCES[name]}", title_justify="left")
    t.add_column("field")
    t.add_column("value")
    for k, v in resolved.items():
        t.add_row(k, json.dumps(v))
    out.print(t)
    for note in ASSUMED.get(name, []):
        out.print(f"assumed: {note}")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
