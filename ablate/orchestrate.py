"""``ablate run``: plan a study, record it, claim what is missing, run it on Ray, read the table back.

Several drivers may run one study against one database: each claims the trials it will run with a
lease that a heartbeat thread renews, runs only those, and waits for the trials another live driver
holds, taking over any whose lease runs out (a killed driver). Results go through a
``JournalingSink``, so a database that goes away mid-run costs no training."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from ablate.artifacts import WEIGHTS, ArtifactStore
from ablate.data_info import check_dataset
from ablate.expand import get_path
from ablate.plan import Plan, make_plan
from ablate.runner import TrialSink, ray_session, run_trials
from ablate.journal import JournalingSink, replay_leftovers
from ablate.store import COMPLETED, FAILED, INTERRUPTED, Store, is_connection_error, lease_seconds


class InitFromError(Exception):
    """``init_from`` names a trial that is not in the database, not completed, or has no weights."""


def resolve_init_from(store: Store, plan: Plan, artifacts: ArtifactStore) -> dict[str, Any] | None:
    """The trial a study fine-tunes from ({"study", "trial"}; with ``match_axes`` one per trial, by trial
    id), its weights checked before anything runs."""
    ref = plan.study.init_from
    if ref is None:
        return None
    try:
        source = store.load(ref.study)
    except KeyError:
        raise InitFromError(f"init_from: study '{ref.study}' is not in {store.display_url}; run it first") from None
    done = [t for t in source.trials if t.status == COMPLETED]
    if ref.match_axes:
        return _init_per_trial(ref, plan, done, artifacts)
    if ref.trial is not None:
        found = [t for t in done if t.trial_id == ref.trial]
    else:
        def matches(t) -> bool:
            try:
                return all(t.params.get(k, get_path(t.config, k)) == v for k, v in (ref.match or {}).items())
            except KeyError:
                return False
        found = [t for t in done if matches(t)]
    if len(found) != 1:
        what = f"trial '{ref.trial}'" if ref.trial else f"a trial matching {ref.match}"
        raise InitFromError(f"init_from: expected exactly one completed {what} in study '{ref.study}', "
                            f"found {len(found)}" + (" (add seed to match)" if len(found) > 1 else ""))
    path = artifacts.path(ref.study, found[0].trial_id, WEIGHTS)
    if not artifacts.exists(path):
        raise InitFromError(f"init_from: no weights at {artifacts.display(path)} (set --artifacts / ABLATE_ARTIFACTS "
                            "to where that study ran; its artifacts.keep must include 'final')")
    return {"study": ref.study, "trial": found[0].trial_id}


def _value(config: dict[str, Any], params: dict[str, Any], path: str) -> Any:
    return params[path] if path in params else config["seed"] if path == "seed" else get_path(config, path)


def _init_per_trial(ref: Any, plan: Plan, done: list, artifacts: ArtifactStore) -> dict[str, Any]:
    """``init_from.match_axes``: each trial's source is the completed trial with its own values of those
    paths (and ``match``'s); {trial id: {"study", "trial"}}, every source's weights checked."""
    out: dict[str, Any] = {}
    for p in plan.trials:
        want = {k: _value(p.trial.config, p.trial.params, k) for k in ref.match_axes}
        want.update(ref.match or {})

        def matches(t: Any) -> bool:
            try:
                return all(_value(t.config, t.params, k) == v for k, v in want.items())
            except KeyError:
                return False
        found = [t for t in done if matches(t)]
        if len(found) != 1:
            raise InitFromError(f"init_from: expected exactly one completed trial matching {want} in study "
                                f"'{ref.study}' (for trial {p.trial.id}), found {len(found)}")
        path = artifacts.path(ref.study, found[0].trial_id, WEIGHTS)
        if not artifacts.exists(path):
            raise InitFromError(f"init_from: no weights at {artifacts.display(path)} (set --artifacts / "
                                "ABLATE_ARTIFACTS to where that study ran; its artifacts.keep must include 'final')")
        out[p.trial.id] = {"study": ref.study, "trial": found[0].trial_id}
    return out


def retrain_ids(store: Store, plan: Plan, named: list[str], stale: bool) -> list[str]:
    """The trials the user asked to train again: ids (or unique prefixes) given by name, and with
    ``stale`` every completed trial made by other code. An unknown name is an InitFromError-like
    user error (RerunError)."""
    ids = [p.trial.id for p in plan.trials]
    out: list[str] = []
    for n in named:
        hits = [i for i in ids if i.startswith(n)]
        if len(hits) != 1:
            raise RerunError(f"--rerun {n}: {'no' if not hits else 'several'} trials of study '{plan.study.name}' "
                             f"{'match' if not hits else 'start with it: ' + ', '.join(hits)}; `ablate plan` lists them")
        out.append(hits[0])
    if stale:
        from ablate.status import plan_status, stale_ids

        try:
            record = store.load(plan.study.name)
        except KeyError:
            record = None
        out += [i for i in stale_ids(plan_status(plan, record)) if i not in out]
    return out


class RerunError(Exception):
    """``--rerun`` names no trial of the study."""


log = logging.getLogger("ablate.orchestrate")
T = TypeVar("T")


@dataclass
class RunSummary:
    total: int
    skipped: int  # completed earlier
    ran: int  # run by this driver
    completed: int
    failed: int
    interrupted: int = 0
    elsewhere: int = 0  # trials that another live driver was running when this one wanted them
    journaled: int = 0  # results that waited in the local journal while the database was away
    unsaved: int = 0  # results still only in the journal at the end (the database stayed away)
    journal: str = ""
    own_ray: bool = False  # this run started (and stopped) a local Ray of its own


def register_plan(store: Store, plan: Plan) -> dict[str, str]:
    """Record the study and its trials; returns each trial's status before this run."""
    spec = plan.study.model_dump(mode="json")
    rows = [{"trial_id": p.trial.id, "params": p.trial.params, "config": p.trial.config,
             "seed": p.trial.seed, "n_params": p.n_params, "flops": p.flops} for p in plan.trials]
    return store.register(plan.study.name, plan.study.description, spec, rows)


def _patient(fn: Callable[[], T], what: str) -> T:
    """A database call of the driver's own bookkeeping, retried while the database is away
    (up to ``ABLATE_DB_PATIENCE_S``, default 600 s), so an outage between trials ends no run."""
    deadline, delay = time.monotonic() + _patience(), 0.5
    while True:
        try:
            return fn()
        except Exception as e:
            if not is_connection_error(e) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: database unreachable, retrying in %.0f s (%s)", what, delay, str(e).splitlines()[0][:200])
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _patience() -> float:
    return float(os.environ.get("ABLATE_DB_PATIENCE_S") or 600)


class Heartbeat:
    """Renews the driver's leases every lease/4 in a daemon thread; a failed renewal (database
    away) is retried at the next beat, so only a lease/0.75 outage lets a successor take over."""

    def __init__(self, store: Store, owner: str, lease_s: float):
        self.store, self.owner, self.lease_s = store, owner, lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ablate-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                self.store.renew(self.owner, self.lease_s)
            except Exception as e:  # the journal keeps the results; the lease may lapse
                log.warning("lease renewal failed: %s", str(e).splitlines()[0][:200])

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_study(path: str | Path, profile: str | None = None, *, store: Store, sink: TrialSink | None = None,
              address: str | None = None, plan: Plan | None = None,
              journal: JournalingSink | None = None, artifacts: str | None = None,
              rerun: list[str] | None = None, rerun_stale: bool = False) -> RunSummary:
    """Run every trial of the study that has not completed. Bad input raises before anything is
    written; trials already completed (same id) are skipped; failed or interrupted ones rerun.

    ``journal``: the driver's ``JournalingSink`` (its ``owner`` is the driver id); ``sink``, if
    given, must forward to it (a progress display). Trials another live driver holds are waited
    for; those whose lease runs out are claimed and run here, so the study is done at the end."""
    plan = plan or make_plan(path, profile)
    check_dataset(plan.study.dataset.model_dump())
    files = ArtifactStore(artifacts)
    init_from = resolve_init_from(store, plan, files)
    journal = journal or JournalingSink(store)
    name = plan.study.name
    replay_leftovers(store)
    known = _patient(lambda: store.trial_states(name), "reading trial states")
    work = bool(rerun) or rerun_stale or not all(i in known and known[i].status == COMPLETED
                                                 for i in (p.trial.id for p in plan.trials))
    res = plan.study.resources
    if work:  # a database that cannot store results fails before Ray starts
        store.check_writable()
    # Ray only when there is work: a finished study (even on a read-only database) just prints its table
    with (ray_session(address, cpus=res.cpus, gpus=res.gpus, workers=res.workers) if work
          else contextlib.nullcontext(False)) as own_ray:
        summary = _run_claimed(plan, store, sink, journal, files, init_from, address, rerun or [], rerun_stale)
    summary.own_ray = own_ray
    return summary


def _run_claimed(plan: Plan, store: Store, sink: TrialSink | None, journal: JournalingSink, files: ArtifactStore,
                 init_from: dict[str, str] | None, address: str | None, rerun: list[str],
                 rerun_stale: bool) -> RunSummary:
    """Register, then claim and run until every trial of the study is done (see ``run_study``)."""
    sink = sink or journal
    owner, lease = journal.owner, lease_seconds()
    name = plan.study.name
    status = register_plan(store, plan)
    again = retrain_ids(store, plan, rerun, rerun_stale)
    if again:  # the user's explicit request: the old results become earlier attempts
        store.rerun(name, again)
        status = {**status, **{i: "pending" for i in again}}
    by_id = {p.trial.id: p.trial for p in plan.trials}
    ids = list(by_id)
    skipped = sum(status[i] == COMPLETED for i in ids)
    t0 = _now_utc()
    ran: set[str] = set()
    elsewhere: set[str] = set()
    res = plan.study.resources
    poll = min(max(lease / 4, 0.2), 5.0)
    try:
        with Heartbeat(store, owner, lease):
            while True:
                states = _patient(lambda: store.trial_states(name), "reading trial states")

                def wanted(i: str) -> bool:  # not done, not run here, not just failed under another driver
                    st = states[i]
                    return (st.status != COMPLETED and i not in ran
                            and not (st.status == FAILED and st.ended_at is not None and st.ended_at >= t0))

                todo = [i for i in ids if wanted(i)]
                if not todo:
                    break
                claimed = _patient(lambda: store.claim(name, todo, owner, lease), "claiming trials")
                if claimed:
                    ran.update(claimed)
                    run_trials(name, [by_id[i] for i in claimed], sink, cpus=res.cpus, gpus=res.gpus,
                               retries=res.retries, workers=res.workers, address=address,
                               init_from=init_from, artifacts=files.uri, keep=plan.study.artifacts.keep,
                               metric=plan.study.metric.name, mode=plan.study.metric.mode)
                    journal.flush(_patience())  # results first, then the claims end
                    _patient(lambda: store.release(owner), "releasing claims")  # anything left running
                    continue
                states = _patient(lambda: store.trial_states(name), "reading trial states")
                held = [i for i in todo if states[i].held_by_other(owner)]
                if held and not elsewhere.issuperset(held):
                    log.warning("%s: %d trial(s) running under another driver; waiting for them", name, len(held))
                elsewhere.update(held)
                time.sleep(poll)  # until they finish, or their lease runs out and they are claimable
    finally:
        unsaved = journal.close(timeout=float(os.environ.get("ABLATE_JOURNAL_FLUSH_S") or 60))
        try:
            store.release(owner)
        except Exception as e:  # the database is away: the lease runs out by itself
            if not is_connection_error(e):
                raise
    after = {i: st.status for i, st in _patient(lambda: store.trial_states(name), "reading results").items()}
    return RunSummary(total=len(ids), skipped=skipped, ran=len(ran),
                      completed=sum(after[i] == COMPLETED for i in ids),
                      failed=sum(after[i] == FAILED for i in ids),
                      interrupted=sum(after[i] == INTERRUPTED for i in ids),
                      elsewhere=len(elsewhere), journaled=journal.journaled, unsaved=unsaved,
                      journal=str(journal.path) if unsaved else "")


def _now_utc():
    from ablate.store import _now

    return _now()
