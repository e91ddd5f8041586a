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
    from ablate.study import StudyError

    return (StudyError, DatasetError)


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
    with ProgressSink(store, p, console=err) as sink:
        summary = run_study(file, profile, store=store, sink=sink, address=address, plan=p)
    err.print(f"{summary.total} trials: {summary.skipped} already completed, {summary.ran} run now, "
              f"{summary.completed} completed, {summary.failed} failed. Results in {store.url}")
    sys.stdout.write(render(store.load(p.study.name), fmt))
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def table(
    study: str = typer.Argument(..., help="Study name (the 'name' in its file)."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP, envvar="ABLATE_DB"),
    fmt: str = typer.Option("md", "--format", "-f", help="md, csv or latex."),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Print a study's table from the result database (mean ± std over seeds)."""
    from ablate.tables import FORMATS, render

    if fmt not in FORMATS:
        _fail(f"--format: one of {', '.join(FORMATS)}, got '{fmt}'")
    store = _store(db)
    try:
        record = store.load(study)
    except KeyError:
        known = ", ".join(n for n, _, _ in store.studies()) or "none yet"
        _fail(f"study '{study}' is not in {store.url} (studies there: {known})")
    text = render(record, fmt)
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


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
