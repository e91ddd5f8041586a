"""Schedule trials on Ray Tune. Only this module touches Ray.

One trial = one Tune trial with the study's resources. Trials report each epoch with
``tune.report``; a Tune callback on the driver hands every event to a ``TrialSink`` (the store,
possibly wrapped by a progress display), so the driver is the single writer of the database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Protocol

from ablate.expand import Trial

# Quiet, bounded local Ray: set before ray is imported anywhere. (Ray's auth stays on: see init_ray.)
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# per-epoch checkpoints of small models trip Tune's snapshot-frequency warning; the store is the record
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")  # TorchTrainer inside a Tune trial (Train V2)
# Tune's experiment snapshots exist for Tuner.restore, which ablate never uses (a rerun resumes each trial
# from the artifact store): one at the end instead of one every >= 10 s while trials report
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "3600")

_REPORT_KEY = "ablate"  # the trainer's metrics travel nested under this key
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2
# A local Ray prestarts one idle worker per CPU when the driver connects, and the driver's registration
# waits for them. Tune's trial actors do not use them (measured with Ray 2.60: the first trial's actor
# still starts a worker of its own, with Tune's runtime env), so they cost CPU and start-up time only.
# Ray also runs its workers at niceness +15 (``worker_niceness``), below the driver and every other process of
# the user's: on a shared workstation a trial then waits behind any other work (measured under load: 1.9 s per
# trial against the plain loop's 0.8 s, the same CPU time). A local Ray's trials run at the driver's priority,
# as the same training in a plain Python loop would.
LOCAL_SYSTEM_CONFIG = {"enable_worker_prestart": False, "prestart_worker_first_driver": False, "worker_niceness": 0}


_ENV_KEY = "ablate_env"  # the worker's environment (provenance), with its first report
_ERROR_KEY = "ablate_error"  # {"text", "kind"}: the trial's readable error, before it fails
_DONE_KEY = "ablate_done"  # {"bytes", "ended_at"}: training ended and artifacts.keep was applied
_PLACEMENT_KEY = "ablate_placement"  # {"node_id", "gpu_ids", "device", "started_at"}: where this attempt runs


class TrialSink(Protocol):
    """Where trial events go on the driver (``ablate.store.Store`` is one)."""

    def start(self, study: str, trial_id: str) -> None: ...
    def add_metrics(self, study: str, trial_id: str, epoch: int, values: dict[str, float]) -> None: ...
    def update_provenance(self, study: str, trial_id: str, values: dict[str, Any]) -> None: ...
    def finish(self, study: str, trial_id: str, error: str | None = None, *,
               error_kind: str | None = None) -> None: ...


def _run_trial(config: dict[str, Any], send: Any, *, rank: int = 0, device: str | None = None,
               distributed: Any = None, placement: dict[str, Any] | None = None) -> None:
    """One trial (or one DDP rank of it) with durable state: resume from the artifact store, report
    every epoch after its checkpoint is written, apply ``artifacts.keep`` at the end. A recurring
    error (the config) is reported and the trial ends without a retry; a transient one is reported
    and raised, so Ray retries it from the last checkpoint (``resources.retries``). ``placement``: the
    Ray node (and GPUs) this attempt runs on, sent with its first report."""
    from ablate.provenance import environment
    from ablate.trainer import train
    from ablate.trial_state import TrialState

    trial = config["trial"]
    state = TrialState(trial["id"], trial["runtime"], is_writer=rank == 0)
    first = [True]

    def report(payload: dict[str, Any]) -> None:
        if first[0]:
            payload[_ENV_KEY], first[0] = environment(), False
            if placement is not None:
                payload[_PLACEMENT_KEY] = placement
        send(payload)

    try:
        resume = state.resume()
        for past in state.history:  # epochs done before: their reports may not have reached the database
            report({_REPORT_KEY: past})
        if state.completed:
            report({_DONE_KEY: {"bytes": state.store.size(state.store.trial_dir(state.study, state.trial_id)),
                                "ended_at": time.time()}})
            return
        epochs = int(trial["recipe"]["epochs"])

        def on_epoch(metrics: dict[str, float], s: dict[str, Any] | None = None) -> None:
            state.on_epoch(metrics, s, last=int(metrics["epoch"]) >= epochs - 1)  # epochs 0: evaluation only
            report({_REPORT_KEY: metrics})

        train(trial, report=on_epoch, device=device, resume=resume, checkpoints=True, distributed=distributed,
              init_state=state.init_weights() if resume is None else None)
        report({_DONE_KEY: {"bytes": state.on_complete(), "ended_at": time.time()}})
    except Exception as e:
        text, kind = state.on_error(e)
        report({_ERROR_KEY: {"text": text, "kind": kind}})
        if kind != "recurring" or distributed is not None:
            raise


def placement() -> dict[str, Any]:
    """Where this Ray worker runs: its node, the GPUs Ray gave it and the device torch will train on.
    Ray's GPU is a scheduling resource: a node that declares GPUs torch cannot use (no CUDA build, a
    broken driver) trains on the CPU, which is recorded (``device``) and logged, never hidden."""
    import ray
    import torch

    gpus = [str(g) for g in ray.get_gpu_ids()]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if gpus and device == "cpu":
        logging.getLogger("ablate.runner").warning(
            "Ray assigned GPU %s but torch sees no CUDA device: training on the CPU", ",".join(gpus))
    return {"node_id": ray.get_runtime_context().get_node_id(), "gpu_ids": gpus, "device": device,
            "started_at": time.time()}


def _trainable(config: dict[str, Any]) -> None:
    """Runs in a Ray worker (reused for the next trial: imports and the process are paid once per
    worker, not per trial): one trial, reporting each epoch to Tune."""
    import torch
    from ray import tune

    from ablate._watchdog import watch_driver

    watch_driver()  # an orphan (driver killed) stops within seconds
    torch.set_num_threads(max(1, int(config["threads"])))
    _run_trial(config, tune.report, placement=placement())


def _ddp_worker(config: dict[str, Any]) -> None:
    """One DDP rank (Ray Train worker): the same trial, with the model and loader prepared for DDP.
    Every rank reports (Ray Train forwards rank 0's reports to Tune); rank 0 alone writes files."""
    import ray.train
    import torch
    from ray.train.torch import get_device, prepare_data_loader, prepare_model

    from ablate._watchdog import watch_driver
    from ablate.trainer import Distributed

    watch_driver()  # an orphan (driver killed) stops within seconds
    torch.set_num_threads(max(1, int(config["threads"])))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    dist = Distributed(wrap_model=prepare_model, wrap_loader=prepare_data_loader, world_size=world, rank=rank)
    _run_trial(config, ray.train.report, rank=rank, device=str(get_device()), distributed=dist,
               placement=placement() if rank == 0 else None)


def _ddp_driver(config: dict[str, Any]) -> None:
    """The Tune trial of a multi-worker trial: a Ray Train TorchTrainer whose rank-0 reports are
    forwarded to Tune (TuneReportCallback); it holds no CPU itself, the workers hold theirs."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = config["resources"]
    per_worker = {"CPU": res["cpus"], **({"GPU": res["gpus"]} if res["gpus"] else {})}
    trainer = TorchTrainer(
        _ddp_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=res["workers"], use_gpu=res["gpus"] > 0,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(name=f"{config['trial']['id']}-ddp", storage_path=config["storage"],
                                       callbacks=[TuneReportCallback()],
                                       failure_config=ray.train.FailureConfig(max_failures=res["retries"])),
    )
    try:
        trainer.fit()
    except Exception as e:  # the workers' own error, readable, before Tune records the failure
        from ray import tune

        from ablate.trial_state import readable_error

        cause = e.__cause__ or e
        tune.report({_ERROR_KEY: {"text": readable_error(cause), "kind": "transient"}})
        raise


def _error_text(trial: Any) -> str:
    """A failed trial's error when it reported none itself (the worker died): the last line of Ray's
    error file first, without ANSI codes."""
    from ablate.text import strip_controls

    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        text = strip_controls(Path(path).read_text()).strip()
        lines = [ln for ln in text.splitlines() if ln.strip()]
        head = next((ln for ln in reversed(lines) if not ln.startswith(" ")), "trial failed")
        return (head + "\n" + text)[-4000:] if head != text else head
    return "trial failed (Ray gave no error file: the worker or its node was lost)"


class RunInterrupted(Exception):
    """The run was stopped (Ctrl-C / SIGINT) before every trial finished; they resume on a rerun."""

    def __init__(self, unfinished: int):
        self.unfinished = unfinished
        super().__init__(f"interrupted with {unfinished} trial(s) unfinished; a rerun resumes each from its last epoch")


# trial ids each run's callback saw finish (completed or failed), by sink key
_FINISHED: dict[str, set[str]] = {}

# Tune pickles its run config (callbacks included) for its experiment state; a sink holds a
# database engine, which cannot be pickled. The callback carries a key into this driver-side map.
_SINKS: dict[str, TrialSink] = {}


def _make_callback(study: str, sink_key: str, resources: dict[str, float]) -> Any:
    from ablate._tune_callback import StoreCallback

    return StoreCallback(study, sink_key, resources)


class ResourceError(Exception):
    """A trial asks for more than the Ray cluster can ever give it: it would wait forever."""


def _node_shapes() -> list[tuple[dict[str, float], float]]:
    """(resources, how many such nodes) the cluster has or can autoscale to: the live nodes, plus
    the node groups an autoscaler declares to the GCS (KubeRay, autoscaler v2; -1 = unbounded)."""
    import ray
    from ray._private.state import state

    shapes = [(dict(n["Resources"]), 1.0) for n in ray.nodes() if n.get("Alive")]
    config = state.get_cluster_config()
    for group in config.node_group_configs if config is not None else []:
        if group.max_count != 0:
            shapes.append(({k: float(v) for k, v in group.resources.items()},
                           float("inf") if group.max_count < 0 else float(group.max_count)))
    return shapes


def check_resources(cpus: float, gpus: float, workers: int = 1) -> None:
    """Raise ResourceError, naming the field and the cluster's nodes, when no node can ever hold
    a trial (or one DDP worker) or all of them together cannot hold its ``workers``: Ray would
    wait forever. ``ABLATE_RESOURCE_CHECK=0`` skips it (an autoscaler that declares no node types)."""
    if os.environ.get("ABLATE_RESOURCE_CHECK", "1") == "0":
        return
    shapes = _node_shapes()
    need = {"CPU": float(cpus), "GPU": float(gpus)}

    def room(node: dict[str, float]) -> float:  # how many workers one such node could ever hold
        return min((node.get(k, 0.0) // v for k, v in need.items() if v > 0), default=float("inf"))

    if sum(room(n) * count for n, count in shapes if room(n)) >= workers:
        return
    nodes = [n for n, _ in shapes]
    have = "; ".join(sorted({f"{n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU" for n in nodes})) or "none"
    cluster = f"the Ray cluster's nodes have {have}"
    short = [f"resources.{k.lower()}s: {v:g}" for k, v in need.items()
             if v > max((n.get(k, 0.0) for n in nodes), default=0.0)]
    if short:
        what = " and ".join(short) + (" per worker" if workers > 1 else " per trial") + " fits no node"
    elif any(room(n) for n in nodes):
        what = f"resources.workers: {workers} workers of {cpus:g} CPU, {gpus:g} GPU do not fit all nodes together"
    else:
        what = f"resources.cpus: {cpus:g} with resources.gpus: {gpus:g} fits no single node"
    raise ResourceError(f"{what}; {cluster}")


def init_ray(address: str | None = None) -> bool:
    """Join ``address`` (or ``RAY_ADDRESS``) if given, with the cluster's own authentication;
    else start a quiet local Ray that listens on loopback only and requires this driver's token
    (``ablate._local_ray``). Returns True when this call started Ray (and so should shut it down)."""
    import ray

    from ablate import _local_ray, _watchdog

    if ray.is_initialized():
        return False
    os.environ.update(_watchdog.driver_env())  # trials on this host watch this process
    address = address or os.environ.get("RAY_ADDRESS") or None
    common: dict[str, Any] = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    if address is None and _join_local_head(common):
        return True
    if address == "local":  # as Ray's own "local": a new local Ray, never a running one
        address = None
    if address:
        _local_ray.use_cluster_auth()
        cluster = dict(address=address, runtime_env={"env_vars": _watchdog.driver_env()}, **common)
        host = address.split("://")[-1].rsplit(":", 1)[0]
        if host in ("127.0.0.1", "localhost", "::1", "[::1]"):  # a Ray on loopback: its raylet is on 127.0.0.1
            with _local_ray.loopback_node() as ip:
                ray.init(_node_ip_address=ip, **cluster)
        else:
            ray.init(**cluster)
        return True
    _local_ray.use_local_token()
    with _local_ray.loopback_node() as ip, _local_ray.without_idle_daemons(), _local_ray.prompt_node_registration():
        # address="local": never join some other Ray found on this machine (/tmp/ray/ray_current_cluster)
        ray.init(address="local", _node_ip_address=ip, include_dashboard=False,
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, _system_config=LOCAL_SYSTEM_CONFIG, **common)
    node_ip = ray._private.worker._global_node.node_ip_address
    if node_ip != ip:  # fail closed rather than run a cluster open to the network
        ray.shutdown()
        raise RuntimeError(f"local Ray came up on {node_ip}, not on loopback ({ip}); not running")
    return True


def _join_local_head(common: dict[str, Any]) -> bool:
    """Join the long-lived local head (``ablate ray up``) if one runs; says so, or why a recorded head is not
    used (then the caller starts a Ray of its own). Its workers get this driver's ablate settings (they are the
    head's children, not this process's)."""
    import ray

    from ablate import _local_head

    head, why = _local_head.find()
    if head is None:
        if why:
            log.warning("%s; starting a Ray for this run (`ablate ray up` starts a new head)", why)
        return False
    if os.path.realpath(head.prefix) != os.path.realpath(sys.prefix):  # its workers would use other packages
        log.warning("the local Ray head at %s runs in the environment %s, not in this one (%s); starting a Ray "
                    "for this run", head.address, head.prefix, sys.prefix)
        return False
    env = {k: v for k, v in os.environ.items() if k.startswith(_HEAD_WORKER_ENV)}
    # the workers import the driver's ablate (a checkout may differ from the head's), then the driver's path
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(
        [str(Path(__file__).resolve().parent.parent), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    try:
        _local_head.join(head, runtime_env={"env_vars": env}, **common)
    except Exception as e:  # a head that dies or hangs right now: this run still runs
        log.warning("the local Ray head at %s did not accept this run (%s); starting a Ray for this run",
                    head.address, str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__)
        if ray.is_initialized():
            ray.shutdown()
        return False
    log.warning("running on the local Ray head at %s (`ablate ray status`; `ablate ray down` stops it)", head.address)
    return True


# what a trial worker of the local head must see of the driver's environment (a Ray the driver starts passes
# it all on): ablate's settings, the thread counts, Train V2 and the driver's identity for the watchdog
_HEAD_WORKER_ENV = ("ABLATE_", "OMP_", "MKL_", "RAY_TRAIN_V2_ENABLED", "PYTHONWARNINGS")
log = logging.getLogger("ablate.runner")


@contextlib.contextmanager
def ray_session(address: str | None = None, *, cpus: float = 1, gpus: float = 0, workers: int = 1) -> Iterator[bool]:
    """Ray up (joined or started) for a whole run, with the study's resources checked against the
    cluster first: an impossible request raises ResourceError before anything is written.
    ``run_trials`` inside it reuses this Ray; Ray is shut down at the end if this started it. Yields
    whether this session started a local Ray of its own (its start and stop are seconds of the run,
    which ``ablate ray up`` saves the next runs).

    A local Ray starts in a background thread while this thread imports Tune, the driver's next cost
    (joining a cluster takes a moment: it stays in this thread)."""
    import ray

    starter = None
    # joining is fast: nothing to overlap, Tune may never be needed
    target = address or os.environ.get("RAY_ADDRESS")
    joining = (bool(target) and target != "local") or (not target and _local_head_running())
    if joining or ray.is_initialized() or threading.current_thread() is not threading.main_thread():
        started = init_ray(address)
    else:
        _sigterm_exits()
        starter = _RayStarter(address)
        starter.start()
        try:
            _import_tune()
        except BaseException:  # Ctrl-C meanwhile: Ray, once up, goes down again
            if starter.result():
                ray.shutdown()
            raise
        started = starter.result()
    own = started and bool(getattr(ray._private.worker._global_node, "head", False))  # a node this driver started
    try:
        check_resources(cpus, gpus, workers)
        yield own
    finally:
        if started:
            ray.shutdown()
        if starter is not None:
            starter.release.set()


def _local_head_running() -> bool:
    from ablate import _local_head

    return _local_head.find(forget=False)[0] is not None  # a stale record stays for init_ray to tell


class _RayStarter(threading.Thread):
    """Starts Ray (``init_ray``) beside the driver's main thread, then waits until Ray is shut down:
    Ray's processes die with the *thread* that started them (PR_SET_PDEATHSIG fate sharing), so
    this thread must outlive them."""

    def __init__(self, address: str | None):
        super().__init__(name="ablate-ray-start", daemon=True)
        self.address, self.started, self.error = address, False, None
        self.done, self.release = threading.Event(), threading.Event()

    def run(self) -> None:
        try:
            self.started = init_ray(self.address)
        except BaseException as e:  # raised in the main thread by result()
            self.error = e
        finally:
            self.done.set()
        if self.started:
            self.release.wait()

    def result(self) -> bool:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.started


class _NotMainThread(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SIGTERM handler is not set")


def _sigterm_exits() -> None:
    """What ``ray.init`` installs when called in the main thread (here it runs in another): SIGTERM
    exits the driver through ``sys.exit``, so Ray's atexit hook shuts the local Ray down. Ray's
    warning that it could not install it itself is dropped."""
    import signal
    import sys

    def exit_on_sigterm(signum: int, frame: Any) -> None:
        sys.exit(signum)

    signal.signal(signal.SIGTERM, exit_on_sigterm)
    worker_log = logging.getLogger("ray._private.worker")
    if not any(isinstance(f, _NotMainThread) for f in worker_log.filters):
        worker_log.addFilter(_NotMainThread())


def _import_tune() -> None:
    """What the driver needs next, done while Ray starts: Tune's import (run_trials, the store
    callback) and the code provenance every trial records (it runs git)."""
    from ray import tune  # noqa: F401

    import ablate._tune_callback  # noqa: F401
    from ablate.provenance import code

    code()


def run_trials(study: str, trials: list[Trial], sink: TrialSink, *, cpus: float = 1, gpus: float = 0,
               retries: int = 0, workers: int = 1, address: str | None = None, storage: str | None = None,
               init_from: dict[str, str] | None = None, artifacts: str | None = None,
               keep: list[str] | None = None, metric: str = "top1", mode: str = "max") -> None:
    """Run ``trials`` as Tune trials with ``cpus``/``gpus`` each; events go to ``sink``. Each trial
    keeps its checkpoints in the artifact store (``artifacts``, default ``ABLATE_ARTIFACTS``) and
    resumes from its last epoch there, whether Ray retries it (``retries``) or a later run does.
    With ``workers > 1`` each trial is a DDP job of that many workers with ``cpus``/``gpus`` each.
    ``init_from``: {"study", "trial"} whose final weights each trial starts from."""
    if not trials:
        return
    import ray
    from ray import tune

    from ablate import _local_ray
    from ablate.artifacts import artifacts_root

    # Tune's result grid looks for result.json files that ablate does not write (the store has them)
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # ...nor does Tune's "Resume experiment with Tuner.restore" apply: `ablate run` again resumes
    logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
    started = init_ray(address)
    key = f"{study}-{id(sink)}"
    _SINKS[key], _FINISHED[key] = sink, set()
    tmp = None if storage else _local_ray.driver_tempdir()
    try:
        check_resources(cpus, gpus, workers)  # before any trial: impossible requests fail fast
        # "runtime" is not part of the hashed config: where this setup keeps files, what it keeps
        runtime = {"artifacts": artifacts or artifacts_root(), "study": study, "init_from": init_from,
                   "keep": list(keep if keep is not None else ["final"]), "metric": metric, "mode": mode}
        configs = [dict(t.config, id=t.id, runtime=runtime) for t in trials]
        space: dict[str, Any] = {"trial": tune.grid_search(configs), "threads": cpus}
        if workers > 1:
            # the driver trial must ask for something: one byte of memory, no CPU
            trainable = tune.with_resources(_ddp_driver, {"cpu": 0, "memory": 1})
            space.update(resources={"cpus": cpus, "gpus": gpus, "workers": workers, "retries": retries},
                         storage=storage or tmp)
        else:
            trainable = tune.with_resources(_trainable, {"cpu": cpus, "gpu": gpus})
        resources = {"cpus": cpus, "gpus": gpus, "workers": workers}
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            # a finished trial's worker (its process, torch, timm, ablate imported) runs the next trial
            tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True),
            run_config=tune.RunConfig(name=study, storage_path=storage or tmp, verbose=0,
                                      callbacks=[_make_callback(study, key, resources)],
                                      failure_config=tune.FailureConfig(max_failures=0 if workers > 1 else retries)),
        )
        tuner.fit()  # Ctrl-C: Tune stops its trials and returns; the unfinished ones tell
        unfinished = len({t.id for t in trials} - _FINISHED[key])
        if unfinished:
            raise RunInterrupted(unfinished)
    finally:
        _SINKS.pop(key, None)
        _FINISHED.pop(key, None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        if started:
            ray.shutdown()
