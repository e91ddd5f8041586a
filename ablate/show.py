"""``ablate show TRIAL``: one trial, whole — what it ran, on what, what it measured, how it ended.

Everything shown comes from the database or the artifact store, so it is printed as plain text:
never rich markup, never terminal control sequences.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.provenance import stale_reasons
from ablate.text import strip_controls as _plain

if TYPE_CHECKING:  # rich is imported where the terminal's text is made: the dashboard uses trial_json only
    from rich.table import Table
    from rich.text import Text


def _epochs(history: dict[str, list[tuple[int, float]]]) -> list[int]:
    return sorted({e for h in history.values() for e, _ in h})


def trial_json(study: str, rec: Any) -> dict[str, Any]:
    """The trial as one JSON object (epochs counted from 1, as everywhere a person reads them)."""
    per_epoch = {e: {} for e in _epochs(rec.history)}
    for name, hist in rec.history.items():
        for e, v in hist:
            per_epoch[e][name] = v
    return {"study": study, "trial_id": rec.trial_id, "status": rec.status, "error_kind": rec.error_kind,
            "attempts": rec.attempts, "params": rec.params, "config": rec.config, "provenance": rec.provenance,
            "stale": stale_reasons(rec.provenance) if rec.status == "completed" else [],
            "started_at": rec.started_at, "ended_at": rec.ended_at, "n_params": rec.n_params, "flops": rec.flops,
            "epochs": [{"epoch": e + 1, **m} for e, m in per_epoch.items()], "error": rec.error,
            "past_attempts": getattr(rec, "past_attempts", [])}


def _kv(title: str, items: dict[str, Any]) -> Table:
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in items.items():
        t.add_row(_plain(k), _plain(v if not isinstance(v, float) else f"{v:.4g}"))
    return t


def _artifacts(study: str, trial_id: str, root: str | None) -> Table | Text:
    from rich.filesize import decimal
    from rich.table import Table
    from rich.text import Text

    from ablate.artifacts import ArtifactStore, artifacts_root, safe_name

    local = root or artifacts_root()
    if "://" not in local:  # nothing on a local disk: say so without importing pyarrow (~0.2 s)
        try:
            folder = str(Path(local).resolve() / safe_name(study, "study") / safe_name(trial_id, "trial id"))
        except ValueError as e:
            return Text(f"artifacts: not readable ({_plain(e)})")
        if not Path(folder).is_dir():
            return Text(f"artifacts: none under {_plain(folder)}")
    try:
        files = ArtifactStore(root)
        folder = files.trial_dir(study, trial_id)
        entries = [(n, files.size(f"{folder}/{n}") if d else s) for n, s, d in files.listdir(folder)]
    except (OSError, ValueError) as e:
        return Text(f"artifacts: not readable ({_plain(e)})")
    if not entries:
        return Text(f"artifacts: none under {_plain(files.display(folder))}")
    t = Table(title=f"Artifacts in {_plain(files.display(folder))}", title_justify="left", box=None)
    t.add_column("file")
    t.add_column("size", justify="right")
    for name, size in sorted(entries):
        t.add_row(_plain(name), decimal(size))
    return t


def trial_report(study: str, rec: Any, artifacts: str | None = None) -> list[Any]:
    """Renderables for the terminal, in reading order."""
    from rich.table import Table
    from rich.text import Text

    head = Text()
    head.append(f"trial {rec.trial_id}", style="bold")
    head.append(f" of study {_plain(study)}: {rec.status}")
    if rec.error_kind:
        head.append(" (will recur: fix the study)" if rec.error_kind == "recurring" else " (transient: a rerun retries)")
    head.append(f", attempt {rec.attempts}")
    parts: list[Any] = [head]
    stale = stale_reasons(rec.provenance) if rec.status == "completed" else []
    if stale:
        parts.append(Text("stale: made by other code: " + "; ".join(stale), style="yellow"))
    parts.append(_kv("Axes", rec.params))
    parts.append(Text("Config", style="italic"))
    import yaml  # here, not at import: the dashboard imports this module and never prints a config

    parts.append(Text(_plain(yaml.safe_dump(rec.config, sort_keys=False, default_flow_style=None)).rstrip()))
    timing = {"started": rec.started_at, "ended": rec.ended_at, "params": rec.n_params, "flops": rec.flops}
    parts.append(_kv("Provenance", {**timing, **(rec.provenance or {})}))
    epochs = _epochs(rec.history)
    if epochs:
        names = [n for n in ("train_loss", "val_loss", "top1", "top5", "lr") if n in rec.history]
        names += sorted(n for n in rec.history if n not in names)
        t = Table(title="Metrics per epoch", title_justify="left")
        t.add_column("epoch", justify="right")
        for n in names:
            t.add_column(_plain(n), justify="right")
        values = {n: dict(h) for n, h in rec.history.items()}
        for e in epochs:
            t.add_row(str(e + 1), *[f"{values[n][e]:.4g}" if e in values[n] else "" for n in names])
        parts.append(t)
    else:
        parts.append(Text("no epochs stored"))
    if rec.error:
        parts.append(Text("Error", style="bold red"))
        parts.append(Text(_plain(rec.error)))
    for a in getattr(rec, "past_attempts", []) or []:
        n = max((len(h) for h in (a.get("metrics") or {}).values()), default=0)
        parts.append(Text(_plain(f"earlier attempt {a['attempt']}: {a['status']}, {n} epochs, replaced "
                                 f"{a.get('archived_at')}" + (f", error: {a['error'].splitlines()[0]}" if a.get('error') else ""))))
    parts.append(_artifacts(study, rec.trial_id, artifacts))
    return parts
