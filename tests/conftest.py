"""Shared fixtures: tiny generated image folders, a study really run on Ray into SQLite, and
the PostgreSQL URL that `make test` starts (ABLATE_TEST_PG)."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path
from typing import Any, Iterable

import pytest
import yaml

os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
# One intra-op thread in every test process (pytest's workers, the drivers they start, Ray's workers):
# `make test` runs two pytest workers and their Ray trials on 2 cores, and torch's second OpenMP thread
# then spin-waits for a descheduled partner. Measured under load: tests/test_data_trainer.py took 487 s
# with torch's default (2 threads) and 69 s with one. Trials set their own count (`threads`) anyway.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# trials save their final weights here (ablate.artifacts); keep tests out of the working tree
import tempfile  # noqa: E402

os.environ["ABLATE_ARTIFACTS"] = tempfile.mkdtemp(prefix="ablate-artifacts-")
# journals and the record of a local Ray head (`ablate ray up`): a head the user keeps up is never joined by tests
os.environ["ABLATE_STATE_DIR"] = tempfile.mkdtemp(prefix="ablate-state-")

from _ray_patience import patient_ray_start  # noqa: E402
from _synth import make_image_folder  # noqa: E402,F401  (tests import it from here)


# Files by their measured wall time in CI (`--durations`), longest first. `make test` runs pytest-xdist
# with --dist loadfile --no-loadscope-reorder: each worker takes the next file in this order when it
# runs dry, so the long files start first and the last to start are short (longest-processing-time
# first). xdist's default order (most tests first) left one-test files of a minute (DDP, the
# cluster) to start last, on one worker, while the other had finished.
SLOWEST_FILES = ("test_concurrency.py", "test_durable.py", "test_cluster.py", "test_dbfaults.py", "test_run.py",
                 "test_trust.py", "test_local_head.py", "test_dashboard.py", "test_tables_render.py", "test_data_trainer.py",
                 "test_ddp.py", "test_fuzz_study.py", "test_analyze.py", "test_cleanup.py", "test_seg_durable.py",
                 "test_seg_trial.py", "test_dw_triton.py", "test_resources.py", "test_cli_imports.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest files first (see SLOWEST_FILES); the order within a file is kept."""
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session", autouse=True)
def shared_local_ray():
    """One local Ray for the whole session, started on first use: ablate's runner joins a running
    Ray instead of starting (and stopping) its own for every study a test runs."""
    patient_ray_start()  # both pytest-xdist workers run Ray tests: importing Ray here costs nothing
    yield
    import sys

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


@pytest.fixture
def ray_session() -> None:
    """Join the session's local Ray, starting it if no Ray is up (a test may have stopped it)."""
    from ablate.runner import init_ray

    init_ray()


@pytest.fixture
def ray_address(ray_session: None) -> str:
    """The session's local Ray as a cluster address, for drivers started as subprocesses: they join
    it (as drivers join a cluster) with the token this process holds (RAY_AUTH_TOKEN_PATH is in the
    environment they inherit) instead of each starting a Ray of its own."""
    import ray

    return ray.get_runtime_context().gcs_address


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imgs"))


def tiny_study(name: str, root: Path | str, **over: Any) -> dict[str, Any]:
    """A study of two arms (kernel 3 vs 5) on a tiny folder, one short epoch each."""
    study: dict[str, Any] = {
        "name": name,
        "description": "tiny test study",
        "model": {"name": "mobilenetv2_lk", "kwargs": {"width_mult": 0.1}},
        "axes": {"grid": {"model.kwargs.kernel_size": [3, 5]}},
        "seeds": [0],
        "recipe": {"epochs": 1, "batch_size": 8, "lr": 0.05, "warmup_epochs": 0},
        "dataset": {"name": "folder", "root": str(root), "image_size": 16},
        "resources": {"cpus": 1, "gpus": 0},
        "table": {"columns": [{"header": "Kernel", "source": "model.kwargs.kernel_size", "format": "{v}x{v}"},
                              {"header": "Top-1", "source": "metric:top1"},
                              {"header": "Params", "source": "params"},
                              {"header": "FLOPs", "source": "flops"}]},
    }
    for k, v in over.items():
        study[k] = v
    return study


def write_study(path: Path, study: dict[str, Any] | str) -> Path:
    path.write_text(study if isinstance(study, str) else yaml.safe_dump(study, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def ran_study(tmp_path_factory: pytest.TempPathFactory, image_folder: Path) -> dict[str, Any]:
    """A real study (2 arms x 2 seeds, 1 epoch) run through Ray into a fresh SQLite file, once per session."""
    from ablate.orchestrate import run_study
    from ablate.runner import init_ray
    from ablate.store import Store

    init_ray()
    d = tmp_path_factory.mktemp("ran")
    file = write_study(d / "tiny.yaml", tiny_study("tiny", image_folder, seeds=[0, 1]))
    url = f"sqlite:///{d / 'results.db'}"
    store = Store(url)
    summary = run_study(file, store=store)
    return {"file": file, "url": url, "store": store, "summary": summary, "name": "tiny"}


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    """Debian's dataset-fashion-mnist, which `make test` installs. Missing: skip locally, fail in CI."""
    from ablate.data import FASHION_MNIST_DIR

    if not Path(FASHION_MNIST_DIR).is_dir():
        if os.environ.get("CI"):
            pytest.fail("Fashion-MNIST missing: `make test` should have installed dataset-fashion-mnist")
        pytest.skip("Debian dataset-fashion-mnist not installed: run through `make test`")
    return Path(FASHION_MNIST_DIR)


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL that `make test` starts. Outside CI a missing server skips; in CI it fails.
    Under pytest-xdist each worker gets a database of its own (``<db>_gw0``...), made fresh here,
    so that tests which empty the schema never empty it under another worker."""
    url = os.environ.get("ABLATE_TEST_PG")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("ABLATE_TEST_PG is not set: `make test` should have started PostgreSQL (scripts/postgres.sh)")
        pytest.skip("no PostgreSQL: run through `make test`, which starts one")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    from sqlalchemy import create_engine, make_url, text

    base = make_url(url)
    mine = f"{base.database}_{worker}"
    admin = create_engine(base.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{mine}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{mine}"'))
    admin.dispose()
    return base.set(database=mine).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: a SQLite file under tmp_path, or the test PostgreSQL with its
    schema dropped."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    url = request.getfixturevalue("pg_url")
    drop_schema(url)
    return url


def unprivileged_prefix() -> list[str]:
    """The command prefix that runs a command as nobody (root ignores file modes, so a read-only file
    is only read-only to another user); [] when not root. The user must reach this checkout's code, so
    the checkout's folders get others' search (x) permission where they lack it (a clone into
    ``mktemp -d`` is 0700): search only, nothing listed or written, and nothing is taken away."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("setpriv missing: cannot drop root to test read-only files")
    root = Path(__file__).resolve().parent.parent
    for d in (root, *root.parents):
        mode = d.stat().st_mode
        if not mode & 0o001:
            d.chmod(mode | 0o001)
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def session_pids(sid: int) -> list[int]:
    """Every process of a session: a driver started with start_new_session=True and the local Ray it
    started (Ray's processes stay in the driver's session)."""
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3]) == sid:
                    pids.append(int(pid))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def kill_session(sid: int) -> None:
    """SIGKILL every process of a session: the driver and the local Ray it started."""
    import signal

    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# A Ray worker's process title while it holds a Tune trial (function trainable): ``ray::ImplicitFunc.train``.
TRAINER_TITLES = ("_trainable", "ImplicitFunc")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def trial_workers(pids: Iterable[int]) -> list[int]:
    """Of ``pids``, the Ray workers holding a trial now."""
    return [pid for pid in pids if any(t in cmdline(pid) for t in TRAINER_TITLES)]


def own_trial_workers() -> list[int]:
    """The Ray workers holding a trial in this process's own Ray (the session's, which drivers started
    with ``--address`` join): another pytest-xdist worker, or anything else on the machine, has Ray
    workers of its own."""
    import ray  # noqa: F401  (puts Ray's bundled psutil on sys.path)
    import psutil

    return trial_workers(c.pid for c in psutil.Process().children(recursive=True))


def signal_each(pids: Iterable[int], sig: int) -> None:
    """Send ``sig`` to each of ``pids`` that is still there."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def drop_schema(url: str) -> None:
    """Empty a shared (PostgreSQL) test database of ablate's tables, so a test starts fresh."""
    from sqlalchemy import text

    from ablate.store import Base, make_engine

    engine = make_engine(url)
    with engine.begin() as c:
        Base.metadata.drop_all(c)
        c.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


def wait_for_epoch(url: str, log: Path | None = None, timeout: float = 240, *,
                   freeze_session: int | None = None) -> tuple[Any, list[int]]:
    """The Store at ``url`` once some trial has stored an epoch (a driver is mid-run), and the trial
    workers left frozen (SIGSTOP). With ``freeze_session`` (a driver started with start_new_session,
    with the local Ray it starts), its trial workers are frozen while the database is checked and
    stay frozen: a trial waits for the driver after each epoch it reports, so it is where the
    database says (give or take an epoch) however slow the machine. The caller thaws them."""
    import signal
    import time

    from ablate.store import Store

    store = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frozen = trial_workers(session_pids(freeze_session)) if freeze_session is not None else []
        signal_each(frozen, signal.SIGSTOP)
        try:
            store = store or Store(url, create=False)
            if store.counts()["metrics"] > 0:
                return store, frozen
        except Exception:  # the driver has not created the database yet
            pass
        signal_each(frozen, signal.SIGCONT)
        time.sleep(0.3)
    raise AssertionError(f"no epoch stored within {timeout:.0f} s" + (f": {log.read_text()[-1500:]}" if log else ""))


def dedent(s: str) -> str:
    return textwrap.dedent(s).lstrip()
