"""The ``ablate`` command: thin typer wrappers over the library.

Bad input (a wrong study file, missing data) prints one message naming the file, the field and
what was expected, and exits 2 without a traceback and without writing to the database.
"""

from __future__ import annotations

import gc as _collector  # (``gc`` is a command below)
import json
import sys
import time
from pathlib import Path
from typing import Optional

from ablate._gc import paused_gc

# typer's import makes ~10^5 objects and no garbage: with the collector paused meanwhile, and what it
# made moved to the oldest generation after (``paused_gc``), every command skips ~5 ms of collections
# walking them
with paused_gc():
    import typer

    from ablate._console import LazyConsole

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
err = LazyConsole(stderr=True)  # rich's Console on first use: commands that print one plain line import no rich
out = LazyConsole()

DB_HELP = ("Result database, any SQLAlchemy URL (sqlite:///path.db, postgresql://user@host/db). "
           "Default: $ABLATE_DB, else the SQLite file ./ablate.db in the current directory.")
ADDRESS_HELP = ("Ray cluster to join (default $RAY_ADDRESS, else the local head of `ablate ray up` if it runs, "
                "else a Ray started by ablate for this run; 'local': always one started for this run).")
ARTIFACTS_HELP = ("Artifact store for checkpoints and weights: a folder, a shared path, or a URI such as "
                  "s3://bucket/prefix (every Ray node must reach it). Default: $ABLATE_ARTIFACTS, else ./ablate-artifacts.")
SHORT_RUN_S = 120  # a run this short, with a Ray of its own, is told of `ablate ray up` (its start and stop: seconds)
PROFILE_HELP = "Profile of the study file to apply (e.g. 'demo' for CPU minutes, 'paper' for Appendix A)."


def _fail(message: str, code: int = 2) -> None:
    """One line on stderr. The message carries user text (file names, values): it is printed as
    text, never as rich markup, and without terminal control sequences."""
    from rich.text import Text

    from ablate.text import strip_controls

    err.print(Text.assemble(("error:", "bold red"), " ", strip_controls(message, keep_newlines=False)),
              highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _user_errors():
    """Exceptions that are the user's input, not ablate's bugs."""
    from ablate.data_info import DatasetError
    from ablate.orchestrate import InitFromError, RerunError
    from ablate.runner import ResourceError
    from ablate.study import StudyError

    return (StudyError, DatasetError, InitFromError, RerunError, ResourceError)


def _plan(file: Path, profile: Optional[str]):
    from ablate.plan import make_plan

    try:
        return make_plan(file, profile)
    except _user_errors() as e:
        _fail(str(e))


SEG_DATASETS = ("ade20k", "seg_folder")


def _check_data(p, file: Path, *, segmentation_only: bool = False) -> None:
    """The study's data is there and well formed (before any compute), else one line and exit 2.
    ``plan`` checks segmentation data (ADE20K, seg_folder), whose layout is cheap to read; ``run``
    checks every dataset."""
    from ablate.data_info import check_dataset

    spec = p.study.dataset.model_dump()
    if segmentation_only and spec["name"] not in SEG_DATASETS:
        return
    try:
        check_dataset(spec)
    except _user_errors() as e:
        _fail(f"{file}: dataset: {e}")


def _store(db: Optional[str], *, create: bool = False):
    """The result database; a database that cannot be used (unreachable, wrong password, not
    SQLite, read-only, foreign, missing folder) is one line and exit 2. ``create=False`` (every
    command but ``run``) never creates a file, folder or schema."""
    from ablate.store import DatabaseError, Store

    try:
        return Store(db, create=create)
    except DatabaseError as e:
        _fail(str(e))


def _freeze_at_exit() -> None:
    """Let this process's exit skip the interpreter's garbage collections over every object still
    alive (typer, click, the database driver, ablate's modules: ~25-30 ms of each read command, whose
    whole run is 0.2-0.5 s): an exit handler freezes them (``gc.freeze``), and exit handlers run before
    those collections; the memory goes back to the system with the process (``run`` freezes too).
    Registered once per process."""
    import atexit

    if not getattr(_freeze_at_exit, "done", False):
        _freeze_at_exit.done = True  # type: ignore[attr-defined]
        atexit.register(_collector.freeze)


def _reader(db: Optional[str]):
    """The result database for a command that only reads (``store_reads.open_reader``): an SQLite
    file is read without SQLAlchemy; nothing is ever created; problems are one line and exit 2."""
    from ablate.store_reads import DatabaseError, open_reader

    _freeze_at_exit()
    try:
        return open_reader(db)
    except DatabaseError as e:
        _fail(str(e))


@app.command()
def plan(
    file: Path = typer.Argument(..., help="Study file (YAML)."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help=PROFILE_HELP),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP + " Read only: plan creates nothing.",
                                     envvar="ABLATE_DB"),
) -> None:
    """Show the trials a study expands to, with params, FLOPs (multiply-adds) and what the database
    already holds of each (completed, failed, interrupted, to run; 'stale' = completed by other
    code: another ablate version or commit, or a dirty tree; `run --rerun-stale` retrains those).
    Trains nothing and checks everything a run would check before it starts."""
    from rich.table import Table

    from ablate.flops import human
    from ablate.status import plan_status, stale_ids
    from ablate.text import plain

    p = _plan(file, profile)
    _check_data(p, file, segmentation_only=True)  # reads only: no database is opened before this
    record, epochs, where = _existing_record(db, p.study.name)
    states = plan_status(p, record, epochs=epochs)
    if fmt == "json":
        rows = [dict(r, status=states[r["trial_id"]].status, stale=states[r["trial_id"]].stale) for r in p.rows()]
        out.print_json(json.dumps({"study": p.study.name, "profile": profile, "database": where,
                                   "flops_input": p.flops_input(), "trials": rows}))
        return
    s = p.study
    axes = [k for k in p.trials[0].trial.params]
    t = Table(title=f"{plain(s.name)}{f' (profile: {plain(profile)})' if profile else ''}: {len(p.trials)} trials, "
                    f"{s.recipe.epochs} epochs each, {s.resources.cpus:g} CPU / {s.resources.gpus:g} GPU per trial")
    t.add_column("trial id")
    for a in axes:
        t.add_column(plain(a.split(".")[-1]))
    t.add_column("Params", justify="right")
    at = p.flops_input()
    t.add_column(f"FLOPs @{at}" if at else "FLOPs", justify="right")
    t.add_column("in the database")
    for pt in p.trials:
        t.add_row(pt.trial.id, *[plain(json.dumps(pt.trial.params[a])) for a in axes], human(pt.n_params),
                  human(pt.flops), states[pt.trial.id].label)
    counts: dict[str, int] = {}
    for st in states.values():
        counts[st.status] = counts.get(st.status, 0) + 1
    t.caption = plain(", ".join(f"{n} {k}" for k, n in counts.items()) + f" ({where})")
    out.print(t)
    stale = stale_ids(states)
    if stale:
        reasons = sorted({r for tid in stale for r in states[tid].stale})
        out.print(plain(f"{len(stale)} completed trial(s) were made by other code ({'; '.join(reasons)}); "
                        f"`ablate run {file} --rerun-stale` retrains them, keeping the old results as earlier attempts."),
                  markup=False, highlight=False)


def _report_artifacts(study: str, root: Optional[str], keep: list[str]) -> None:
    """One line: how much the study's trials keep in the artifact store, and where."""
    from rich.filesize import decimal

    from ablate.artifacts import ArtifactStore

    try:
        files = ArtifactStore(root)
        folder = f"{files.base}/{study}"
        size = files.size(folder)
    except (OSError, ValueError) as e:
        err.print(f"artifacts: not readable ({e})", markup=False, highlight=False)
        return
    err.print(f"artifacts: {decimal(size)} under {files.display(folder)} (keep: {', '.join(keep) or 'nothing'}; "
              "`ablate gc` frees what a study no longer needs)", markup=False, highlight=False)


def _existing_record(db: Optional[str], study: str):
    """(the study's trials as the database holds them, or None; {trial id: epochs stored}; where
    that was looked for). Reads only summaries and each trial's last epoch (aggregates, never a
    per-epoch row): a database that does not exist yet is no error here, and is not created."""
    from types import SimpleNamespace

    from ablate.store_reads import DatabaseError, default_db_url, masked, normalize_url, open_reader

    url = normalize_url(db or default_db_url())
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None, {}, f"no database at {url} yet"
    try:
        store = open_reader(url)
    except DatabaseError as e:
        if "holds no ablate results yet" in str(e):
            return None, {}, f"{masked(url)} is empty"
        _fail(str(e))
    try:
        trials = store.trial_summaries(study)
        epochs = {tid: e + 1 for tid, e in store.last_epochs(study).items()}  # epochs are stored from 0, contiguous
        return SimpleNamespace(trials=trials), epochs, store.display_url
    except KeyError:
        return None, {}, f"{store.display_url} holds no study '{study}'"
    finally:
        store.close()


@app.command()
def run(
    file: Path = typer.Argument(..., help="Study file (YAML)."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help=PROFILE_HELP),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP, envvar="ABLATE_DB"),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP, envvar="RAY_ADDRESS"),
    fmt: str = typer.Option("md", "--format", "-f", help="Format of the table printed at the end: md, csv, latex."),
    artifacts: Optional[str] = typer.Option(None, "--artifacts", envvar="ABLATE_ARTIFACTS", help=ARTIFACTS_HELP),
    rerun: Optional[list[str]] = typer.Option(None, "--rerun", metavar="TRIAL_ID", help="Train this completed or "
                                              "failed trial again (repeatable; an id prefix will do). Its old "
                                              "results are kept as an earlier attempt (`ablate show`)."),
    rerun_stale: bool = typer.Option(False, "--rerun-stale", help="Train again every completed trial made by "
                                     "other code (see `ablate plan`), keeping the old results as earlier attempts."),
) -> None:
    """Run a study: train every trial not yet completed (reruns skip finished ones), store results, print the table."""
    began = time.monotonic()
    from ablate.orchestrate import run_study
    from ablate.progress import ProgressSink
    from ablate.tables import render

    p = _plan(file, profile)
    _check_data(p, file)
    from ablate.journal import JournalingSink
    from sqlalchemy.exc import SQLAlchemyError

    from ablate.runner import RunInterrupted
    from ablate.store import DatabaseError, describe_error

    store = _store(db, create=True)
    journal = JournalingSink(store)
    try:
        with ProgressSink(journal, p, console=err.console) as sink:
            summary = run_study(file, profile, store=store, sink=sink, address=address, plan=p, journal=journal,
                                artifacts=artifacts, rerun=rerun, rerun_stale=rerun_stale)
        from ablate.tables import load_table_record

        record = load_table_record(store, p.study.name)
    except _user_errors() as e:
        _fail(f"{file}: {e}")
    except (RunInterrupted, KeyboardInterrupt) as e:
        why = str(e) if isinstance(e, RunInterrupted) else "interrupted; a rerun resumes each unfinished trial"
        err.print(f"{why}. Results so far in {store.display_url}", markup=False, highlight=False)
        raise typer.Exit(130)
    except DatabaseError as e:
        _fail(str(e))
    except SQLAlchemyError as e:  # the database went away for good, or cannot be written
        left = f"; results not yet written are kept in {journal.path} for the next run" if journal.pending else ""
        _fail(describe_error(e, store.url) + left)
    parts = [f"{summary.skipped} already completed", f"{summary.ran} run now"]
    if summary.elsewhere:
        parts.append(f"{summary.elsewhere} running under another driver")
    parts += [f"{summary.completed} completed", f"{summary.failed} failed"]
    if summary.interrupted:
        parts.append(f"{summary.interrupted} interrupted")
    err.print(f"{summary.total} trials: {', '.join(parts)}. Results in {store.display_url}",
              highlight=False, markup=False, soft_wrap=True)
    if summary.journaled:
        err.print(f"{summary.journaled} results waited in a local journal while the database was unreachable"
                  + (f"; {summary.unsaved} are still only in {summary.journal} (the next run writes them)"
                     if summary.unsaved else "; all written since"), highlight=False, markup=False, soft_wrap=True)
    if summary.own_ray and time.monotonic() - began < SHORT_RUN_S:
        err.print("tip: this run started a Ray of its own and stopped it again; `ablate ray up` keeps one on this "
                  "machine for the next runs to join, so they skip both (`ablate ray down` stops it)",
                  highlight=False, markup=False, soft_wrap=True)
    _report_artifacts(p.study.name, artifacts, p.study.artifacts.keep)
    analyses_failed = 0
    if p.study.analyses and p.study.analyses.declared():  # after training: the analyses the study declares
        analyses_failed = _run_analyses(p, store, address, artifacts, required=False)
        record = store.load(p.study.name)  # the table may show analysis metrics (erf_r20 ...)
    sys.stdout.write(render(record, fmt))
    import gc

    gc.freeze()  # the interpreter's last collection at exit then skips torch's, timm's and Ray's objects (~1-2 s)
    if summary.failed or summary.unsaved or analyses_failed:
        raise typer.Exit(1)


@app.command()
def table(
    study: str = typer.Argument(..., help="Study name (the 'name' in its file)."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP, envvar="ABLATE_DB"),
    fmt: str = typer.Option("md", "--format", "-f", help="md, csv (one row per arm, snake_case columns, with "
                            "trial ids), latex (booktabs) or html."),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
    analysis: Optional[str] = typer.Option(None, "--analysis", "-a", help="The table of an analysis instead: "
                                           "'erf' prints Table 10's layout (r per threshold t, the paper's numbers "
                                           "beside); md, csv or latex."),
    all_arms: bool = typer.Option(False, "--all", help="Also show arms, seeds and profiles the database holds "
                                  "but the study file no longer declares (marked ‡)."),
) -> None:
    """Print a study's table from the result database: the arms its study file declares (as last
    run), mean ± std over seeds, Δ and a paired test against the baseline, best in bold."""
    if analysis is not None:
        from ablate.analyses.tables import AnalysisTableError, render_analysis

        try:
            text = render_analysis(_load_study(_reader(db), study), analysis, fmt)
        except AnalysisTableError as e:
            _fail(str(e))
        _write_text(text, out_file)
        return
    from ablate.tables import FORMATS, load_table_record, render

    if fmt not in FORMATS:
        _fail(f"--format: one of {', '.join(FORMATS)}, got '{fmt}'")
    store = _reader(db)
    try:
        record = load_table_record(store, study)
    except KeyError:
        _unknown_study(store, study)
    beside = (record.spec.get("table") or {}).get("beside")
    if beside and beside in {n for n, _, _ in store.studies()}:  # Table 11 whole: the downstream half to the right
        from ablate.seg_tables import render_beside

        text = render_beside(record, load_table_record(store, beside), fmt)
    else:
        text = render(record, fmt, all_arms=all_arms)
    _write_text(text, out_file)


def _write_text(text: str, out_file: Optional[Path]) -> None:
    if out_file:
        out_file.write_text(text)
        err.say(f"wrote {out_file}")
    else:
        sys.stdout.write(text)


@app.command()
def analyze(
    file: Path = typer.Argument(..., help="Study file (YAML) with an `analyses:` section."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help=PROFILE_HELP),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP, envvar="ABLATE_DB"),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP, envvar="RAY_ADDRESS"),
    artifacts: Optional[str] = typer.Option(None, "--artifacts", envvar="ABLATE_ARTIFACTS", help=ARTIFACTS_HELP),
) -> None:
    """Run the study's declared analyses (`analyses:` erf, kernels, shape_bias) on every completed
    trial that lacks them, from its stored weights, as Ray tasks with the trial's resources. Scalars
    (erf_r20 ...) become metrics of the trial, arrays (erf.npy) sit beside its weights; a rerun
    skips what is done. `ablate table STUDY --analysis erf` prints Table 10."""
    p = _plan(file, profile)
    if not p.study.analyses or not p.study.analyses.declared():
        _fail(f"{file}: analyses: a section declaring at least one analysis (erf, kernels, shape_bias)")
    if _run_analyses(p, _store(db), address, artifacts, required=True):
        raise typer.Exit(1)


def _run_analyses(p, store, address: Optional[str], artifacts: Optional[str], *, required: bool) -> int:
    """Analyse what the study's completed trials lack; prints a summary line and each failure.
    Returns how many failed. ``required``: a study with no completed trial is an error (analyze)."""
    from sqlalchemy.exc import SQLAlchemyError

    from ablate.analyses.driver import analyze_study
    from ablate.data_info import check_dataset
    from ablate.journal import JournalingSink
    from ablate.runner import RunInterrupted
    from ablate.store import DatabaseError, describe_error

    if p.study.analyses.erf is not None:
        try:
            check_dataset(p.study.dataset.model_dump())
        except _user_errors() as e:
            _fail(f"{p.file}: dataset: {e}")
    journal = JournalingSink(store)
    try:
        summary = analyze_study(p, store, journal, address=address, artifacts=artifacts, console=err.console)
    except _user_errors() as e:
        _fail(f"{p.file}: {e}")
    except (RunInterrupted, KeyboardInterrupt):
        journal.close()
        err.print(f"interrupted; a rerun analyses what is left. Results so far in {store.display_url}",
                  markup=False, highlight=False)
        raise typer.Exit(130)
    except DatabaseError as e:
        _fail(str(e))
    except SQLAlchemyError as e:
        _fail(describe_error(e, store.url))
    unsaved = journal.close()
    if required and summary.trials == 0:
        _fail(f"{p.file}: no completed trial of study '{p.study.name}' in {store.display_url} to analyse "
              f"(`ablate run {p.file}` trains them)")
    for e in summary.errors:
        err.print(f"failed: {e}", markup=False, highlight=False, soft_wrap=True)
    err.print(f"analyses {', '.join(summary.declared)} of {summary.trials} completed trial(s): {summary.skipped} "
              f"already done, {summary.ran} run now, {summary.failed} failed"
              + (f"; {summary.not_completed} trial(s) not completed yet" if summary.not_completed else "")
              + (f"; {unsaved} results wait in {journal.path}" if unsaved else "")
              + f". Results in {store.display_url}", markup=False, highlight=False, soft_wrap=True)
    return summary.failed + (1 if unsaved else 0)


@app.command()
def studies(db: Optional[str] = typer.Option(None, "--db", help=DB_HELP, envvar="ABLATE_DB")) -> None:
    """List the studies in the result database."""
    from rich.table import Table

    from ablate.text import plain

    store = _reader(db)
    t = Table(title=plain(f"Studies in {store.display_url}"))
    for c in ("name", "trials", "description"):
        t.add_column(c)
    for name, desc, n in store.studies():  # text from the database: no markup, no control sequences
        t.add_row(plain(name), str(n), plain(desc or ""))
    out.print(t)


@app.command()
def models(
    input_size: int = typer.Option(224, "--input-size", min=8, help="Square input resolution for FLOPs."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    all_pattern: Optional[str] = typer.Option(None, "--all", metavar="PATTERN", help="Instead of the zoo, list "
                                              "every model name in timm's registry matching PATTERN (shell-style, "
                                              "e.g. 'resnet*', '*' for all; 'resnet18.*' lists pretrained tags)."),
) -> None:
    """List the model zoo with params and FLOPs (multiply-adds) of the deployed (re-parameterized) form.

    The first listing builds every model on the meta device (seconds); the counts are kept in ablate's state
    folder for this code and these torch/timm versions, so the next one answers at once."""
    from rich.table import Table

    from ablate.flops import human
    from ablate.zoo import uncounted, zoo_rows

    if fmt not in ("table", "json"):
        _fail(f"--format: one of table, json, got '{fmt}'")
    if all_pattern is not None:
        import timm

        import ablate.models  # noqa: F401  (registers ablate's models)

        names = (timm.list_pretrained(all_pattern) if "." in all_pattern else timm.list_models(all_pattern))
        if not names:
            _fail(f"--all: no model in timm's registry matches '{all_pattern}' (try '*{all_pattern}*')")
        sys.stdout.write(json.dumps(names) + "\n" if fmt == "json" else "\n".join(names) + "\n")
        return
    import contextlib

    todo = uncounted(input_size)  # seconds of building: on a terminal, a spinner says what runs until the table
    with (err.status(f"Counting {todo} zoo models' params and FLOPs (kept for the next listing) ...")
          if todo and err.is_terminal else contextlib.nullcontext()):
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


def _unknown_study(store, study: str) -> None:
    known = ", ".join(n for n, _, _ in store.studies()[:20]) or "none yet"
    _fail(f"study '{study}' is not in {store.display_url} (studies there: {known})")


def _load_study(store, study: str, history: bool = False):
    try:
        return store.load(study, history=history)
    except KeyError:
        _unknown_study(store, study)


@app.command()
def export(
    studies: Optional[list[str]] = typer.Argument(None, help="Study names (default: every study in the database)."),
    out_file: Path = typer.Option(..., "--out", "-o", help="File to write."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="csv or parquet (default: from --out's "
                                      "suffix .csv / .parquet; a suffix that says otherwise is an error)."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP, envvar="ABLATE_DB"),
    final: bool = typer.Option(False, "--final", help="Only each metric's last epoch (one row per trial and metric)."),
    trials: Optional[list[str]] = typer.Option(None, "--trial", metavar="TRIAL_ID", help="Only this trial "
                                               "(repeatable; full ids, as `ablate plan` prints them)."),
) -> None:
    """Write trials and metrics in long format (one row per trial, epoch and metric; epochs from 1),
    for pandas. Streams in chunks: memory stays small whatever the database's size."""
    from ablate.export import export as write_export, resolve_format

    try:  # before the database is opened: a wrong name writes nothing
        fmt = resolve_format(out_file, fmt)
    except ValueError as e:
        _fail(str(e))
    store = _reader(db)
    known = {n for n, _, _ in store.studies()}
    for name in studies or []:
        if name not in known:
            _unknown_study(store, name)
    n = write_export(store, out_file, fmt, studies=studies or None, trial_ids=trials or None, final=final)
    err.say(f"wrote {n} rows to {out_file}")


@app.command()
def dashboard(
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP, envvar="ABLATE_DB"),
    out_file: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML page to write."),
    serve: bool = typer.Option(False, "--serve", help="Serve the page on loopback instead of writing it: built "
                               "once, rebuilt only when results change; curves and trial details on demand."),
    host: str = typer.Option("127.0.0.1", "--host", help="Loopback address to serve on (with --serve): 127.0.0.1 "
                            "or ::1; the dashboard has no authentication."),
    port: int = typer.Option(8050, "--port", help="Port to serve on (with --serve)."),
    refresh: int = typer.Option(10, "--refresh", min=0, help="Seconds between the page's checks for new "
                                "results (with --serve; it reloads only when they changed; 0: never)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Also write every plot as PNG and SVG under "
                                          "this folder (kaleido + a local Chromium)."),
    artifacts: Optional[Path] = typer.Option(None, "--artifacts", help="Trial artifact folder, for ERF / kernel "
                                             "heatmaps saved as erf.npy / kernel.npy (default: $ABLATE_ARTIFACTS, "
                                             "else ./ablate-artifacts)."),
) -> None:
    """One self-contained interactive HTML page of every study: tables, learning curves, Top-1 against
    kernel size / FLOPs / params, ERF heatmaps, failed trials.

    With --out, each study's part of the page is kept in ablate's state folder ($ABLATE_STATE_DIR, else
    ~/.cache/ablate) and built again only when that study's results change (ABLATE_PAGE_CACHE=0: never kept)."""
    from ablate import dashboard as dash

    store = _reader(db)
    if images is not None:
        try:
            paths = dash.export_images(store, images, artifacts=artifacts)
        except dash.ImageExportError as e:
            _fail(str(e), 1)
        err.print(f"wrote {len(paths)} images under {images}")
    if serve:
        try:
            server = dash.make_server(store, host, port, refresh, artifacts)
        except ValueError as e:
            _fail(str(e))
        except OSError as e:
            _fail(f"--port: a free port on {host} ({e})")
        err.print(f"serving the dashboard of {store.display_url} at http://{host}:{server.server_address[1]}/ (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        return
    # studies unchanged since the last page are taken from the state folder's cache, the others built by
    # two processes where a second core is free (the same page: ``dashboard.report``)
    built: list[str] = []
    dash.write_report(store, out_file, artifacts=artifacts, workers=dash.page_workers(), cache=True, built=built)
    total = len(store.studies())
    kept = f"; {total - len(built)} of {total} studies unchanged since the last page" if len(built) < total else ""
    err.say(f"wrote {out_file}{kept}")


@app.command()
def show(
    trial: str = typer.Argument(..., help="Trial id, or a unique prefix of one (as `ablate plan` prints it)."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP, envvar="ABLATE_DB"),
    artifacts: Optional[str] = typer.Option(None, "--artifacts", envvar="ABLATE_ARTIFACTS", help=ARTIFACTS_HELP),
    fmt: str = typer.Option("text", "--format", "-f", help="text or json."),
) -> None:
    """Everything about one trial: config, provenance (code, versions, host, devices, device-hours),
    metrics per epoch, error, earlier attempts and the files it keeps."""
    from ablate.show import trial_json, trial_report

    if fmt not in ("text", "json"):
        _fail(f"--format: one of text, json, got '{fmt}'")
    store = _reader(db)
    try:
        study, rec = store.find_trial(trial)
    except (KeyError, ValueError) as e:
        _fail(str(e.args[0]) if e.args else str(e))
    if fmt == "json":
        sys.stdout.write(json.dumps(trial_json(study, rec), indent=2, default=str) + "\n")
        return
    for part in trial_report(study, rec, artifacts):
        out.print(part)


@app.command()
def gc(
    file: Path = typer.Argument(..., help="Study file (YAML): every profile of it counts as declared."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Whose artifacts.keep applies (default: "
                                          "the file's base)."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP, envvar="ABLATE_DB"),
    artifacts: Optional[str] = typer.Option(None, "--artifacts", envvar="ABLATE_ARTIFACTS", help=ARTIFACTS_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="List what would be removed; remove nothing."),
) -> None:
    """Free the artifact store: checkpoints and weights of completed trials that `artifacts.keep` does
    not keep, and folders of trials the study file no longer declares. Unfinished trials keep their
    checkpoints (a rerun resumes from them)."""
    from rich.filesize import decimal

    from ablate.artifacts import ArtifactStore
    from ablate.cleanup import apply_gc, plan_gc
    from ablate.study import load_study

    try:
        name = load_study(file, profile).name
    except _user_errors() as e:
        _fail(str(e))
    store = _reader(db)
    try:
        completed = {t.trial_id for t in store.load(name).trials if t.status == "completed"}
    except KeyError:
        completed = set()
    files = ArtifactStore(artifacts)
    report = plan_gc(file, completed, files, profile)
    for r in report.removals:
        out.print(f"{'would remove' if dry_run else 'removed'} {decimal(r.bytes):>9}  {r.shown}  ({r.why})",
                  markup=False, highlight=False)
    if not dry_run:
        apply_gc(report, files)
    verb = "would free" if dry_run else "freed"
    err.print(f"{verb} {decimal(report.freed)} in {len(report.removals)} item(s); {decimal(report.kept_bytes)} kept "
              f"under {files.display(files.base)}/{name}", markup=False, highlight=False)


@app.command("import-weights")
def import_weights_cmd(
    model: str = typer.Argument(..., help="Model name in timm's registry, e.g. replknet_31b or resnet101."),
    checkpoint: Path = typer.Argument(..., help="Checkpoint file: an official RepLKNet .pth, a torchvision/timm "
                                                "state dict, or ablate's own."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Where to write the checked state dict in ablate's names."),
    kwargs: str = typer.Option("{}", "--kwargs", help='Model kwargs as JSON, e.g. \'{"kernel_sizes": [13, 13, 13, 13]}\'.'),
    ema: bool = typer.Option(False, "--ema", help="Take the EMA weights when the checkpoint has them."),
) -> None:
    """Load a checkpoint into MODEL by name (official RepLKNet names mapped, every shape checked) and save
    it; use the file in a study as `kwargs: {pretrained: true, pretrained_cfg_overlay: {file: OUT}}`."""
    try:
        parsed = json.loads(kwargs)
    except json.JSONDecodeError as e:
        _fail(f"--kwargs: not JSON ({e.msg})")
    if not isinstance(parsed, dict):
        _fail("--kwargs: expected a JSON object of model kwargs")
    from ablate.weights import WeightsError, import_weights

    try:
        report = import_weights(model, checkpoint, out_file, parsed, ema)
    except WeightsError as e:
        _fail(str(e))
    note = " (official names mapped)" if report.mapped else ""
    fresh = f"; left at init (classifier of another size): {', '.join(report.fresh)}" if report.fresh else ""
    out.print(f"{model}: {report.loaded} tensors loaded{note}{fresh}; wrote {out_file}", markup=False, highlight=False)


recipes_app = typer.Typer(help="Appendix A training recipes: `ablate recipes` lists them, "
                          "`ablate recipes show NAME` prints every resolved value.", no_args_is_help=False,
                          invoke_without_command=True)
app.add_typer(recipes_app, name="recipes")


@recipes_app.callback()
def recipes_list(ctx: typer.Context) -> None:
    """List the named recipes (use one with `recipe: {preset: NAME}` in a study file)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

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
    from rich.table import Table

    from ablate.recipes import ASSUMED, OFFICIAL, OFFICIAL_README, PRESETS, SOURCES, official_value, paper_resolution
    from ablate.recipes import source as value_source
    from ablate.study import RecipeSpec

    if name not in PRESETS:
        _fail(f"recipe '{name}': one of {', '.join(PRESETS)}")
    resolved = RecipeSpec(preset=name).model_dump(mode="json")
    if fmt == "json":
        sys.stdout.write(json.dumps(resolved, indent=2) + "\n")
        return
    t = Table(title=f"{name}: {SOURCES[name]}", title_justify="left")
    for c in ("field", "value", "source", "official"):
        t.add_column(c)
    for k, v in resolved.items():
        src = value_source(name, k) if k != "preset" else ""
        has, official = official_value(name, k)
        beside = json.dumps(official) if has and src == "paper" and official != v else ""
        t.add_row(k, json.dumps(v), src, beside)
    out.print(t)
    out.print(f"paper input: {paper_resolution(name)}x{paper_resolution(name)} (set dataset.image_size in the study)")
    out.print("source: paper = Appendix A states it; official = the appendix is silent, taken from the official "
              "repository's command; assumed = silent in both, inherited; default = the study schema's default. "
              "official column: the official command's value where it differs from the paper's.")
    if name in OFFICIAL:
        out.print(f"official command: {OFFICIAL_README}, {OFFICIAL[name][0]}")
    for note in ASSUMED.get(name, []):
        out.print(f"assumed: {note}")


ray_app = typer.Typer(help="A long-lived local Ray for this workstation: `ablate ray up` once, then every "
                      "`ablate run` without --address joins it instead of starting and stopping a Ray of its own "
                      "(seconds per run). Loopback only, token auth.", no_args_is_help=True)
app.add_typer(ray_app, name="ray")


@ray_app.command("up")
def ray_up(cpus: Optional[float] = typer.Option(None, "--cpus", help="CPUs the head offers trials (default: all cores)."),
           gpus: Optional[float] = typer.Option(None, "--gpus", help="GPUs the head offers (default: as Ray detects).")
           ) -> None:
    """Start the local Ray head (127.0.0.1, a fresh token) unless one runs; `ablate run` joins it from now on."""
    from ablate._local_head import HeadError, head_dir, up

    try:
        head, started = up(cpus, gpus)
    except HeadError as e:
        _fail(str(e), 1)
    what = "started" if started else "already running"
    err.print(f"local Ray head {what} at {head.address} (pid {head.pid}, {head.cpus:g} CPUs; record and token in "
              f"{head_dir()}). `ablate run` joins it; `ablate ray down` stops it.", markup=False, highlight=False,
              soft_wrap=True)


@ray_app.command("status")
def ray_status() -> None:
    """Whether the local Ray head runs, its address and its resources (total and free now). Exit 1 if none runs."""
    from ablate._local_head import find, head_dir

    head, why = find()
    if head is None:
        err.print(why or f"no local Ray head (none recorded in {head_dir()}); `ablate ray up` starts one",
                  markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    from ablate._local_head import resources

    total, free = resources(head)
    res = ", ".join(f"{k} {free.get(k, 0):g}/{total[k]:g} free" for k in ("CPU", "GPU") if k in total)
    out.print(f"local Ray head at {head.address} (pid {head.pid}): {res}; log {head.log}",
              markup=False, highlight=False, soft_wrap=True)


@ray_app.command("down")
def ray_down() -> None:
    """Stop the local Ray head (trials running on it stop; their `ablate run`s fail and a rerun resumes them)."""
    from ablate._local_head import down, head_dir

    head = down()
    if head is None:
        err.print(f"no local Ray head recorded in {head_dir()}", markup=False, highlight=False)
        return
    err.print(f"stopped the local Ray head at {head.address} (pid {head.pid})", markup=False, highlight=False)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
