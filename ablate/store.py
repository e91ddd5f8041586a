"""The result database: studies, trials and per-epoch metrics (SQLAlchemy 2 typed ORM).

Only this module touches SQL. Every method is one short transaction, so a crash or kill at any
point leaves the database consistent. Several drivers may share one database: a trial is claimed
with a lease (``claim``/``renew``/``release``) so that exactly one driver writes it, and a killed
driver's lease runs out for a successor to take over. Results are append-only: a completed
trial's status and metrics are never changed again, except by ``rerun`` (an explicit user request),
which keeps the replaced attempt in ``trial_attempts``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

from sqlalchemy import (JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, create_engine, delete, event, func, insert, inspect, or_,
                        select, text, update)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

DEFAULT_DB_FILE = "ablate.db"
MIGRATIONS = Path(__file__).resolve().parent.parent / "db"

PENDING, RUNNING, COMPLETED, FAILED, INTERRUPTED = "pending", "running", "completed", "failed", "interrupted"
RECURRING, TRANSIENT = "recurring", "transient"  # error_kind: fails again on rerun / may pass on rerun
INTERRUPTED_ERROR = "interrupted: the driver stopped"
DEFAULT_LEASE_S = 60.0
SQLITE_BUSY_MS = 30_000
PG_LOCK_KEY = int.from_bytes(b"ablate", "big")  # advisory lock around migrations

log = logging.getLogger("ablate.store")
T = TypeVar("T")


def default_db_url() -> str:
    """``ABLATE_DB`` if set, else an SQLite file ``ablate.db`` in the current directory."""
    return os.environ.get("ABLATE_DB") or f"sqlite:///{Path(DEFAULT_DB_FILE).resolve()}"


def normalize_url(url: str) -> str:
    """Plain ``postgresql://`` means psycopg 3 here (the driver ablate installs)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def masked(url: str) -> str:
    """The URL as it may be printed: password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: print nothing after the scheme's credentials
        return url.split("@", 1)[-1] if "@" in url else url


def lease_seconds() -> float:
    """How long a claim holds without renewal: ``ABLATE_LEASE_S``, default 60 s."""
    try:
        return max(0.5, float(os.environ.get("ABLATE_LEASE_S") or DEFAULT_LEASE_S))
    except ValueError:
        return DEFAULT_LEASE_S


def new_owner() -> str:
    """A driver id, ``host:pid:random``: unique per run, and on this host checkable for liveness."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` is a driver of this host whose process is gone (a killed driver
    whose lease has not run out yet); other hosts' drivers are judged by their lease alone."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    try:  # a zombie (killed, not yet reaped by its parent) is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(dt: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back; they were written in UTC."""
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


class DatabaseError(Exception):
    """The database cannot be used; the message is one line naming the (masked) URL."""


class Base(DeclarativeBase):
    pass


class StudyRow(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    trials: Mapped[list["TrialRow"]] = relationship(back_populates="study", cascade="all, delete-orphan")


class TrialRow(Base):
    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("study_id", "trial_id", name="uq_trials_study_trial"),
                      Index("ix_trials_study_status", "study_id", "status"))  # 0004
    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    trial_id: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    n_params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    flops: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # the profile whose registration inserted it, "" for the file's base; None: registered before 0004
    profile: Mapped[str | None] = mapped_column(String(100), nullable=True)
    study: Mapped[StudyRow] = relationship(back_populates="trials")


class MetricRow(Base):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("trial_pk", "epoch", "name", name="uq_metrics_trial_epoch_name"),
                      Index("ix_metrics_trial_name_epoch", "trial_pk", "name", "epoch", "value"))  # 0004
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_pk: Mapped[int] = mapped_column(ForeignKey("trials.pk", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)


class TrialAttemptRow(Base):
    """An attempt replaced by ``rerun``: what the trial was before, metrics included."""

    __tablename__ = "trial_attempts"
    __table_args__ = (Index("ix_trial_attempts_trial_pk_attempt", "trial_pk", "attempt"),)
    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_pk: Mapped[int] = mapped_column(ForeignKey("trials.pk", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)  # {name: [[epoch, value], ...]}
    archived_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


@dataclass
class TrialRecord:
    """A trial as read back for tables and dashboards (no ORM objects leave the store)."""

    trial_id: str
    params: dict[str, Any]
    config: dict[str, Any]
    seed: int
    status: str
    n_params: int | None
    flops: int | None
    error: str | None
    started_at: datetime | None
    ended_at: datetime | None
    final: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    error_kind: str | None = None
    past_attempts: list[dict[str, Any]] = field(default_factory=list)  # replaced by rerun, oldest first
    profile: str | None = None  # the profile that registered it ("": the base; None: unknown)


@dataclass
class StudyRecord:
    name: str
    description: str
    spec: dict[str, Any]
    trials: list[TrialRecord]


CODE_FIELDS = ("ablate_version", "git_commit", "git_dirty")  # = ablate.provenance.CODE_FIELDS (no import here)
ERROR_HEAD = 2000  # characters of a trial's error read for its first line (summaries)
IN_CHUNK = 5000  # ids per IN (...) list: SQLite allows 32766 bound values, PostgreSQL 65535


def display_epoch(epoch: int | None) -> int | None:
    """The epoch as a person counts it (from 1); the database stores the trainer's 0-based index."""
    return None if epoch is None else epoch + 1


def _first_line(error: str | None) -> str | None:
    """An error's message: its first non-empty line (the exception's own message comes first)."""
    if not error:
        return error
    return next((ln.strip() for ln in error.splitlines() if ln.strip()), "")


def _id_filters(trial_ids: Iterable[str] | None) -> Iterator[list[Any]]:
    """WHERE clauses that select ``trial_ids`` in IN-lists of bounded length ([] = all trials)."""
    if trial_ids is None:
        yield []
        return
    ids = sorted(set(trial_ids))
    for i in range(0, len(ids), IN_CHUNK):
        yield [TrialRow.trial_id.in_(ids[i:i + IN_CHUNK])]


def _final_query(scope: Any, names: list[str] | None) -> Any:
    """(trial pk, trial id, metric, epoch, value) at each metric's last epoch, for the trials whose
    pk is in ``scope`` (a subquery or a list): max(epoch) per (trial, metric), joined back to its
    row; both halves read only the index (trial_pk, name, epoch, value)."""
    where = [MetricRow.trial_pk.in_(scope)]
    if names is not None:
        where.append(MetricRow.name.in_(names))
    last = (select(MetricRow.trial_pk.label("pk"), MetricRow.name.label("name"), func.max(MetricRow.epoch).label("e"))
            .where(*where).group_by(MetricRow.trial_pk, MetricRow.name).subquery())
    return (select(last.c.pk, TrialRow.trial_id, last.c.name, last.c.e, MetricRow.value)
            .select_from(last)
            .join(MetricRow, (MetricRow.trial_pk == last.c.pk) & (MetricRow.name == last.c.name)
                  & (MetricRow.epoch == last.c.e))
            .join(TrialRow, TrialRow.pk == last.c.pk))


@dataclass
class StudyInfo:
    """A study without its trials."""

    name: str
    description: str
    spec: dict[str, Any]


@dataclass
class TrialSummary:
    """A trial without its per-epoch rows (``Store.trial_summaries``); ``error`` is its first line."""

    study: str
    trial_id: str
    params: dict[str, Any]
    seed: int
    status: str
    n_params: int | None
    flops: int | None
    error: str | None
    error_kind: str | None
    attempts: int
    started_at: datetime | None
    ended_at: datetime | None
    provenance: dict[str, Any]
    profile: str | None  # the profile that registered it ("": the file's base; None: unknown, before 0004)
    config: dict[str, Any] | None = None  # with config=True only
    _pk: int = field(default=0, repr=False)

    @property
    def arm(self) -> str:
        """The axis values without the seed, as canonical JSON: trials of one arm share it."""
        return arm_key(self.params)


def arm_key(params: dict[str, Any]) -> str:
    """Canonical JSON of a trial's axis values without its seed (the key of its arm)."""
    return json.dumps({k: v for k, v in params.items() if k != "seed"}, sort_keys=True)


@dataclass
class TrialState:
    """Who holds a trial and in which state (what the claim loop of ``orchestrate`` polls)."""

    status: str
    claimed_by: str | None
    lease_until: datetime | None
    ended_at: datetime | None

    def held_by_other(self, owner: str, now: datetime | None = None) -> bool:
        return (self.claimed_by is not None and self.claimed_by != owner and self.lease_until is not None
                and self.lease_until > (now or _now()) and not owner_is_dead(self.claimed_by))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # transactions are begun by _sqlite_begin, not by pysqlite
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")  # first: the pragmas below may wait for a lock
    cur.execute("PRAGMA foreign_keys=ON")
    # an empty file (no schema yet) is left as it is: migrate() switches it once it writes the schema
    if cur.execute("PRAGMA page_count").fetchone()[0] > 0:
        _sqlite_wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, no fsync per commit
    cur.close()


def _sqlite_wal(cur: Any) -> None:
    if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            cur.execute("PRAGMA journal_mode=WAL")  # readers (dashboard) never block the writer
        except Exception:  # a read-only file stays in its mode; reading still works
            pass


def _sqlite_begin(conn: Any) -> None:
    """Writers take the write lock at BEGIN (IMMEDIATE), so two drivers queue on busy_timeout
    instead of failing with "database is locked" when a read transaction upgrades to a write."""
    immediate = conn.get_execution_options().get("ablate_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; creates nothing (SQLite files appear on first write)."""
    url = normalize_url(url)
    kw: dict[str, Any] = {}
    if url.startswith("postgresql"):
        kw["connect_args"] = {"connect_timeout": 10}  # an unreachable host fails in seconds, not minutes
    engine = create_engine(url, pool_pre_ping=True, **kw)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _alembic_config(conn: Any = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
        cfg.attributes["target_metadata"] = Base.metadata
    return cfg


def known_revisions() -> list[str]:
    """Schema revisions in db/versions, oldest first, read from the file names (``NNNN_what.py``,
    revision id ``NNNN``; tests/test_store.py holds alembic's own graph to this list), so commands
    that only read check a database's schema without importing alembic (~0.3 s)."""
    return sorted(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def head_revision() -> str:
    return known_revisions()[-1]


def _current_revision(conn: Any) -> str | None:
    """What alembic's MigrationContext.get_current_revision reads (one linear history, one row)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest alembic revision (db/versions), safe with any number of
    processes at once: SQLite serializes on BEGIN IMMEDIATE, PostgreSQL on an advisory lock, and
    whoever comes second finds the schema at head and does nothing."""
    from alembic import command

    head = head_revision()
    with engine.connect() as conn:  # read first: a database at head is never written (read-only files)
        if _current_revision(conn) == head:
            return
    with engine.execution_options(ablate_write=True).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})  # released at commit
        if _current_revision(conn) != head:
            command.upgrade(_alembic_config(conn), "head")
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            _sqlite_wal(conn.connection.dbapi_connection.cursor())


# -- what is wrong with a database, in one line ---------------------------------------------------
def _sqlite_path(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" or u.query.get("uri"):
        return None
    return Path(u.database)


def describe_error(exc: BaseException, url: str) -> str:
    """One line: the masked URL and what is wrong with the database behind it."""
    where = masked(url)
    msg = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = msg[0] if msg else type(exc).__name__
    low = str(getattr(exc, "orig", None) or exc).lower()
    if isinstance(exc, sa_exc.NoSuchModuleError) or "can't load plugin" in low:
        what = "unknown database URL scheme or driver (use sqlite:///path.db or postgresql://user@host/db)"
    elif isinstance(exc, sa_exc.ArgumentError):
        what = f"not a database URL ({first})"
    elif "password authentication failed" in low or "authentication failed" in low:
        what = "wrong user name or password"
    elif "does not exist" in low and "database" in low:
        what = "the database does not exist (create it first)"
    elif "role" in low and "does not exist" in low:
        what = "the database user does not exist"
    elif any(s in low for s in ("connection refused", "could not connect", "connection timed out",
                                "name or service not known", "could not translate host", "no route to host",
                                "server closed the connection", "connection is bad", "timeout expired")):
        what = f"database server unreachable ({first})"
    elif "file is not a database" in low or "file is encrypted" in low:
        what = "the file is not an SQLite database"
    elif "readonly" in low or "read-only" in low or "permission denied" in low:
        what = "the database is read-only (file or folder not writable)"
    elif "unable to open database file" in low:
        what = "cannot open the database file (missing folder or no permission)"
    elif "database is locked" in low:
        what = f"the database stayed locked by another process for {SQLITE_BUSY_MS // 1000} s"
    else:
        what = first
    return f"database {where}: {what}"


def is_connection_error(exc: BaseException) -> bool:
    """Errors that a later retry of the same write may not hit: connection lost or refused, server
    restarting, lock timeouts. Not: constraint violations, unknown trials, programming errors."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    low = str(exc).lower()
    if any(s in low for s in ("readonly", "read-only", "permission denied", "file is not a database",
                              "no such table", "no such column", "does not exist")):
        return False  # waiting does not fix these
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError,
                            sa_exc.DisconnectionError, ConnectionError))


class Store:
    """Typed access to the result database at ``url`` (any SQLAlchemy URL).

    ``create=False`` (read-only commands) never creates a file, folder or schema: a missing SQLite
    file or an empty database raises ``DatabaseError``. ``create=True`` creates the SQLite file and
    the schema, never a missing folder. Every problem with the database itself (unreachable, wrong
    password, not SQLite, read-only, foreign tables) is a ``DatabaseError`` with one line.
    """

    def __init__(self, url: str | None = None, *, create: bool = True):
        self.url = normalize_url(url or default_db_url())
        self.display_url = masked(self.url)
        try:
            path = _sqlite_path(self.url)
        except sa_exc.ArgumentError as e:
            raise DatabaseError(describe_error(e, self.url)) from None
        if path is not None:
            if not path.parent.is_dir():
                raise DatabaseError(f"database {self.display_url}: folder {path.parent} does not exist "
                                    "(ablate creates the database file, not folders)")
            if not create and not path.is_file():
                raise DatabaseError(f"database {self.display_url}: no such file (run a study with "
                                    "`ablate run` to create it)")
            if path.is_dir():
                raise DatabaseError(f"database {self.display_url}: {path} is a folder, not a file")
        engine_url = self.url
        if (path is not None and path.is_file() and not os.access(path.parent, os.W_OK)
                and not Path(f"{path}-wal").exists()):
            # a folder nobody can write: no process can be writing the file, and SQLite could not
            # create the -shm file it needs to read a WAL database, so read it as immutable
            engine_url = f"sqlite:///file:{path}?mode=ro&immutable=1&uri=true"
        try:
            self.engine = make_engine(engine_url)
        except Exception as e:  # unknown scheme or driver, bad URL
            raise DatabaseError(describe_error(e, self.url)) from None
        self._write_engine = self.engine.execution_options(ablate_write=True)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._wsession = sessionmaker(self._write_engine, expire_on_commit=False)
        try:
            self._check_schema(create)
        except DatabaseError:
            self.engine.dispose()
            raise
        except sa_exc.SQLAlchemyError as e:
            self.engine.dispose()
            raise DatabaseError(describe_error(e, self.url)) from None

    def _check_schema(self, create: bool) -> None:
        with self.engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            revision = _current_revision(conn) if "alembic_version" in tables else None
        ours = {m.__tablename__ for m in Base.__subclasses__()} | {"alembic_version"}
        if not tables:
            if not create:
                raise DatabaseError(f"database {self.display_url}: holds no ablate results yet (empty; "
                                    "`ablate run` creates the schema)")
        elif revision is None:
            foreign = sorted(tables - ours)[:5]
            raise DatabaseError(f"database {self.display_url}: not an ablate database (tables "
                                f"{', '.join(foreign or sorted(tables)[:5])} without ablate's schema version); "
                                "use another database")
        elif revision not in known_revisions():
            raise DatabaseError(f"database {self.display_url}: schema revision {revision} is not one this "
                                "ablate knows (written by a newer ablate, or not ablate's)")
        if tables and revision == head_revision():
            return
        migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def _retry(self, fn: Callable[[], T], tries: int = 5) -> T:
        """Run a write transaction again when a concurrent writer won a unique-key race."""
        for i in range(tries):
            try:
                return fn()
            except sa_exc.IntegrityError:
                if i == tries - 1:
                    raise
                time.sleep(0.05 * (i + 1))
        raise AssertionError("unreachable")

    def check_writable(self) -> None:
        """Raise DatabaseError when this database cannot take writes (a read-only file or folder,
        a read-only server), with nothing written: a no-op UPDATE in a transaction rolled back.
        ``run`` asks before it starts Ray, so a run that could not store anything fails at once."""
        try:
            with self._write_engine.connect() as conn:
                with conn.begin() as tx:
                    conn.execute(update(StudyRow).where(text("1 = 0")).values(name=StudyRow.name))
                    tx.rollback()
        except sa_exc.SQLAlchemyError as e:
            raise DatabaseError(describe_error(e, self.url)) from None

    # -- registration --------------------------------------------------------------------------
    def register(self, name: str, description: str, spec: dict[str, Any],
                 trials: Iterable[dict[str, Any]]) -> dict[str, str]:
        """Create or update the study and insert its missing trials as pending; safe to run from
        several processes at once. Writes nothing when nothing changed.

        ``trials``: dicts with trial_id, params, config, seed, n_params, flops.
        Returns {trial_id: status} for every trial of this expansion.
        """
        trials = list(trials)

        def changes(s: Session) -> tuple[StudyRow | None, dict[str, TrialRow], bool]:
            study = s.scalar(select(StudyRow).where(StudyRow.name == name))
            existing = {} if study is None else {
                t.trial_id: t for t in s.scalars(select(TrialRow).where(TrialRow.study_id == study.id))}
            dirty = (study is None or study.description != description or study.spec != spec
                     or any(t["trial_id"] not in existing
                            or (existing[t["trial_id"]].n_params, existing[t["trial_id"]].flops)
                            != (t.get("n_params"), t.get("flops")) for t in trials))
            return study, existing, dirty

        with self._session() as s:
            study, existing, dirty = changes(s)
            if not dirty:
                return {t["trial_id"]: existing[t["trial_id"]].status for t in trials}

        def write() -> dict[str, str]:
            with self._wsession.begin() as s:
                study, existing, _ = changes(s)
                if study is None:
                    study = StudyRow(name=name, description=description, spec=spec)
                    s.add(study)
                    s.flush()
                elif study.description != description or study.spec != spec:
                    study.description, study.spec, study.updated_at = description, spec, _now()
                status: dict[str, str] = {}
                for t in trials:
                    row = existing.get(t["trial_id"])
                    if row is None:
                        s.add(TrialRow(study_id=study.id, status=PENDING, attempts=0, profile=spec.get("profile") or "", **t))
                        status[t["trial_id"]] = PENDING
                    else:
                        if (row.n_params, row.flops) != (t.get("n_params"), t.get("flops")):
                            row.n_params, row.flops = t.get("n_params"), t.get("flops")
                        status[t["trial_id"]] = row.status
                return status

        return self._retry(write)

    def _trial(self, s: Session, study: str, trial_id: str) -> TrialRow:
        row = s.scalar(select(TrialRow).join(StudyRow).where(StudyRow.name == study, TrialRow.trial_id == trial_id))
        if row is None:
            raise KeyError(f"trial {trial_id} of study {study} is not registered")
        return row

    # -- claims --------------------------------------------------------------------------------
    def claim(self, study: str, trial_ids: Iterable[str], owner: str, lease_s: float) -> list[str]:
        """Atomically claim those of ``trial_ids`` that are not completed and not held by another
        driver's live lease (a lease runs out, or its driver on this host is gone). Returns the ids
        now held by ``owner``; writes nothing when there is nothing to claim."""
        ids = list(trial_ids)
        if not ids:
            return []
        now = _now()
        with self._session() as s:
            rows = s.execute(select(TrialRow.trial_id, TrialRow.claimed_by, TrialRow.lease_until)
                             .join(StudyRow).where(StudyRow.name == study, TrialRow.trial_id.in_(ids),
                                                   TrialRow.status != COMPLETED)).all()
        free = [tid for tid, by, until in rows
                if by is None or by == owner or _utc(until) is None or _utc(until) <= now or owner_is_dead(by)]
        if not free:
            return []
        dead = sorted({by for _, by, until in rows if by and by != owner and owner_is_dead(by)})
        with self._wsession.begin() as s:
            sid = select(StudyRow.id).where(StudyRow.name == study).scalar_subquery()
            cond = [TrialRow.claimed_by.is_(None), TrialRow.claimed_by == owner, TrialRow.lease_until.is_(None),
                    TrialRow.lease_until <= now]
            if dead:
                cond.append(TrialRow.claimed_by.in_(dead))
            res = s.execute(update(TrialRow)
                            .where(TrialRow.study_id == sid, TrialRow.trial_id.in_(free),
                                   TrialRow.status != COMPLETED, or_(*cond))
                            .values(claimed_by=owner, lease_until=now + timedelta(seconds=lease_s))
                            .returning(TrialRow.trial_id)
                            .execution_options(synchronize_session=False))
            got = {r[0] for r in res}
        return [i for i in ids if i in got]

    def renew(self, owner: str, lease_s: float) -> int:
        """Extend every lease ``owner`` holds (the driver's heartbeat). Returns how many."""
        with self._session() as s:
            if not s.scalar(select(func.count()).select_from(TrialRow).where(TrialRow.claimed_by == owner)):
                return 0
        with self._wsession.begin() as s:
            return s.execute(update(TrialRow).where(TrialRow.claimed_by == owner)
                             .values(lease_until=_now() + timedelta(seconds=lease_s))
                             .execution_options(synchronize_session=False)).rowcount

    def release(self, owner: str) -> int:
        """The driver stops: its claims end, and its trials still running become interrupted.
        Returns how many trials were interrupted."""
        with self._session() as s:
            if not s.scalar(select(func.count()).select_from(TrialRow).where(TrialRow.claimed_by == owner)):
                return 0
        with self._wsession.begin() as s:
            n = s.execute(update(TrialRow).where(TrialRow.claimed_by == owner, TrialRow.status == RUNNING)
                          .values(status=INTERRUPTED, error=INTERRUPTED_ERROR, error_kind=TRANSIENT,
                                  ended_at=_now(), claimed_by=None, lease_until=None)
                          .execution_options(synchronize_session=False)).rowcount
            s.execute(update(TrialRow).where(TrialRow.claimed_by == owner)
                      .values(claimed_by=None, lease_until=None).execution_options(synchronize_session=False))
            return n

    def trial_states(self, study: str) -> dict[str, TrialState]:
        """Status and holder of every trial of ``study``."""
        with self._session() as s:
            q = (select(TrialRow.trial_id, TrialRow.status, TrialRow.claimed_by, TrialRow.lease_until,
                        TrialRow.ended_at).join(StudyRow).where(StudyRow.name == study))
            return {tid: TrialState(st, by, _utc(until), _utc(ended)) for tid, st, by, until, ended in s.execute(q)}

    # -- one trial's life (the driver holding its claim) ------------------------------------------
    def start(self, study: str, trial_id: str, owner: str | None = None, *, at: datetime | None = None) -> bool:
        """Mark running, one more attempt. Metrics already stored stay (a resumed trial keeps its
        epochs). A completed trial is left alone (results are append-only), and so is a trial that
        another live driver holds. ``at``: the start time, when replaying a journal (a start already
        applied is not counted twice). Returns whether the trial was marked running."""
        with self._wsession.begin() as s:
            row = self._trial(s, study, trial_id)
            if row.status == COMPLETED:
                log.warning("not starting %s of %s: it is completed (results are append-only)", trial_id, study)
                return False
            if at is not None and row.status == RUNNING and _utc(row.started_at) == _utc(at):
                return True  # replayed twice
            if (owner is not None and row.claimed_by not in (None, owner) and _utc(row.lease_until) is not None
                    and _utc(row.lease_until) > _now() and not owner_is_dead(row.claimed_by)):
                log.warning("not starting %s of %s: held by driver %s", trial_id, study, row.claimed_by)
                return False
            row.status, row.started_at, row.ended_at = RUNNING, at or _now(), None
            row.error, row.error_kind = None, None
            row.attempts += 1
            if owner is not None and row.claimed_by != owner:
                row.claimed_by, row.lease_until = owner, _now() + timedelta(seconds=lease_seconds())
            return True

    def add_metrics(self, study: str, trial_id: str, epoch: int, values: dict[str, float]) -> bool:
        """One epoch's metrics in one transaction; a re-reported epoch replaces its values (upsert
        of trial, epoch, name), so replays and resumed trials never duplicate rows. Ignored for a
        completed trial. Returns whether anything was written."""
        with self._wsession.begin() as s:
            row = self._trial(s, study, trial_id)
            if row.status == COMPLETED:
                log.warning("ignoring epoch %d of %s (%s): the trial is completed", epoch, trial_id, study)
                return False
            s.execute(delete(MetricRow).where(MetricRow.trial_pk == row.pk, MetricRow.epoch == epoch,
                                              MetricRow.name.in_(list(values))))
            if values:
                s.execute(insert(MetricRow), [{"trial_pk": row.pk, "epoch": epoch, "name": k, "value": float(v)}
                                              for k, v in values.items()])
            return True

    def add_analysis(self, study: str, trial_id: str, values: dict[str, float]) -> bool:
        """Scalars of an analysis of a completed trial's weights (``ablate analyze``), stored as
        metrics at the trial's last epoch (so they are among its final metrics) and upserted (an
        analysis rerun with other options replaces its values). Training metrics are never touched;
        a trial that is not completed is ignored. Returns whether anything was written."""
        with self._wsession.begin() as s:
            row = self._trial(s, study, trial_id)
            if row.status != COMPLETED:
                log.warning("ignoring analysis results of %s (%s): the trial is %s", trial_id, study, row.status)
                return False
            epoch = s.scalar(select(func.max(MetricRow.epoch)).where(MetricRow.trial_pk == row.pk)) or 0
            s.execute(delete(MetricRow).where(MetricRow.trial_pk == row.pk, MetricRow.name.in_(list(values))))
            if values:
                s.execute(insert(MetricRow), [{"trial_pk": row.pk, "epoch": epoch, "name": k, "value": float(v)}
                                              for k, v in values.items()])
            return True

    def finish(self, study: str, trial_id: str, error: str | None = None, *, error_kind: str | None = None) -> bool:
        """Completed, or failed with ``error`` (``error_kind``: recurring or transient); the claim
        ends. A completed trial is never finished again. Returns whether anything changed."""
        with self._wsession.begin() as s:
            row = self._trial(s, study, trial_id)
            if row.status == COMPLETED:
                log.warning("not finishing %s of %s again: it is completed", trial_id, study)
                return False
            row.status = FAILED if error else COMPLETED
            row.error, row.error_kind, row.ended_at = error, (error_kind if error else None), _now()
            row.claimed_by, row.lease_until = None, None
            return True

    def mark_interrupted(self, study: str, owner: str) -> int:
        """The trials of ``study`` that ``owner`` left running: interrupted (a rerun resumes them).
        Another driver's trials are not touched."""
        with self._session() as s:
            q = (select(func.count()).select_from(TrialRow).join(StudyRow)
                 .where(StudyRow.name == study, TrialRow.status == RUNNING, TrialRow.claimed_by == owner))
            if not s.scalar(q):
                return 0
        with self._wsession.begin() as s:
            sid = select(StudyRow.id).where(StudyRow.name == study).scalar_subquery()
            return s.execute(update(TrialRow)
                             .where(TrialRow.study_id == sid, TrialRow.status == RUNNING, TrialRow.claimed_by == owner)
                             .values(status=INTERRUPTED, error=INTERRUPTED_ERROR, error_kind=TRANSIENT,
                                     ended_at=_now())
                             .execution_options(synchronize_session=False)).rowcount

    def update_provenance(self, study: str, trial_id: str, values: dict[str, Any]) -> None:
        """Merge ``values`` into the trial's provenance (keys added or replaced, none removed)."""
        with self._wsession.begin() as s:
            row = self._trial(s, study, trial_id)
            row.provenance = {**(row.provenance or {}), **values}

    def rerun(self, study: str, trial_ids: Iterable[str]) -> int:
        """The user asked to train these again: each completed, failed or interrupted one keeps its
        current attempt (status, error, provenance, metrics) in ``trial_attempts``, loses its metrics
        and becomes pending. Pending or running trials are left alone. Returns how many."""
        ids = list(trial_ids)
        n = 0
        with self._wsession.begin() as s:
            rows = s.scalars(select(TrialRow).join(StudyRow).where(
                StudyRow.name == study, TrialRow.trial_id.in_(ids),
                TrialRow.status.in_([COMPLETED, FAILED, INTERRUPTED]))).all()
            for row in rows:
                metrics: dict[str, list[list[float]]] = {}
                for epoch, name, value in s.execute(select(MetricRow.epoch, MetricRow.name, MetricRow.value)
                                                    .where(MetricRow.trial_pk == row.pk).order_by(MetricRow.epoch)):
                    metrics.setdefault(name, []).append([epoch, value])
                s.add(TrialAttemptRow(trial_pk=row.pk, attempt=row.attempts, status=row.status, error=row.error,
                                      error_kind=row.error_kind, provenance=row.provenance,
                                      started_at=row.started_at, ended_at=row.ended_at, metrics=metrics,
                                      archived_at=_now()))
                s.execute(delete(MetricRow).where(MetricRow.trial_pk == row.pk))
                row.status, row.error, row.error_kind, row.provenance = PENDING, None, None, None
                row.started_at, row.ended_at, row.claimed_by, row.lease_until = None, None, None, None
                n += 1
        return n

    # -- reading: ask SQL for what is needed ---------------------------------------------------
    # The read API (issue 13). Every method reads one study (or a chunk of trials) with a few
    # queries whose size is the answer's, never every per-epoch row when only finals are needed;
    # the same SQL on SQLite and PostgreSQL, served by the indexes of db/versions/0004.
    #
    #   study_info(study) -> StudyInfo                 name, description, spec (KeyError if none)
    #   trial_summaries(study, trial_ids=None, *, config=False, light=False) -> list[TrialSummary]
    #                                                  one row per trial, in insertion order: id, arm,
    #                                                  params, seed, status, params/FLOPs, error's first
    #                                                  line, provenance, profile; no metric rows
    #   configs(study, trial_ids) -> {trial_id: config}  full configs of a few trials
    #   final_values(study, metrics=None, trial_ids=None) -> {trial_id: {metric: (epoch, value)}}
    #                                                  each metric's row at the trial's last epoch
    #   best_values(study, metric, mode="max", trial_ids=None) -> {trial_id: (epoch, value)}
    #                                                  the best value and its first epoch
    #   histories(study, trial_ids, metrics=None) -> {trial_id: {metric: [(epoch, value), ...]}}
    #                                                  per-epoch rows, only for the trials asked
    #   last_epochs(study) -> {trial_id: last epoch stored}
    #   iter_trial_chunks(studies=None, trial_ids=None, *, metrics="all"|"final"|"none",
    #                     chunk=1000) -> Iterator[(study, [TrialRecord])]   bounded memory, for export
    #
    # Epochs are stored as the trainer reports them, from 0; what a person reads counts from 1
    # (``display_epoch``). ``load`` (a whole StudyRecord) is built on these queries.
    def study_info(self, study: str) -> StudyInfo:
        with self.engine.connect() as c:
            row = c.execute(select(StudyRow.name, StudyRow.description, StudyRow.spec)
                            .where(StudyRow.name == study)).first()
        if row is None:
            raise KeyError(study)
        return StudyInfo(*row)

    def _study_id(self, c: Any, study: str) -> int:
        sid = c.execute(select(StudyRow.id).where(StudyRow.name == study)).scalar()
        if sid is None:
            raise KeyError(study)
        return sid

    def trial_summaries(self, study: str, trial_ids: Iterable[str] | None = None, *,
                        config: bool = False, light: bool = False) -> list[TrialSummary]:
        """Every trial of ``study`` (or those of ``trial_ids``), without metric rows; ``config=True``
        adds each full config (what a table needs of it is in one trial per arm: see ``configs``).
        ``light=True`` (what a table reads) leaves out the error, times and attempts, and reads of the
        provenance only its code fields (``CODE_FIELDS``), extracted by the database."""
        prov: list[Any] = [TrialRow.provenance] if not light else [
            TrialRow.provenance["ablate_version"].as_string(), TrialRow.provenance["git_commit"].as_string(),
            TrialRow.provenance["git_dirty"].as_boolean()]
        cols = [TrialRow.pk, TrialRow.trial_id, TrialRow.params, TrialRow.seed, TrialRow.status, TrialRow.n_params,
                TrialRow.flops, TrialRow.error_kind, TrialRow.profile, *prov]
        if not light:
            cols += [func.substr(TrialRow.error, 1, ERROR_HEAD), TrialRow.attempts, TrialRow.started_at,
                     TrialRow.ended_at]
        if config:
            cols.append(TrialRow.config)
        out: list[TrialSummary] = []
        with self.engine.connect() as c:
            sid = self._study_id(c, study)
            for where in _id_filters(trial_ids):
                q = select(*cols).where(TrialRow.study_id == sid, *where).order_by(TrialRow.pk)
                for r in c.execute(q):
                    if light:
                        code = {k: v for k, v in zip(CODE_FIELDS, r[9:12]) if v is not None}
                        out.append(TrialSummary(study, r[1], r[2], r[3], r[4], r[5], r[6], None, r[7], 0, None, None,
                                                code, r[8], r[12] if config else None, _pk=r[0]))
                    else:
                        out.append(TrialSummary(study, r[1], r[2], r[3], r[4], r[5], r[6], _first_line(r[10]), r[7],
                                                r[11], _utc(r[12]), _utc(r[13]), dict(r[9] or {}), r[8],
                                                r[14] if config else None, _pk=r[0]))
        if trial_ids is not None:
            out.sort(key=lambda t: t._pk)
        return out

    def configs(self, study: str, trial_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The full configs of ``trial_ids`` of ``study``."""
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as c:
            sid = self._study_id(c, study)
            for where in _id_filters(list(trial_ids)):
                out.update(c.execute(select(TrialRow.trial_id, TrialRow.config)
                                     .where(TrialRow.study_id == sid, *where)).all())
        return out

    def final_values(self, study: str, metrics: Iterable[str] | None = None,
                     trial_ids: Iterable[str] | None = None) -> dict[str, dict[str, tuple[int, float]]]:
        """{trial_id: {metric: (epoch, value)}} at each metric's last stored epoch, by an aggregate
        query (max epoch per trial and metric, joined back to its row). Trials without metrics are
        absent."""
        names = list(metrics) if metrics is not None else None
        out: dict[str, dict[str, tuple[int, float]]] = {}
        with self.engine.connect() as c:
            sid = self._study_id(c, study)
            for where in _id_filters(trial_ids):
                q = _final_query(select(TrialRow.pk).where(TrialRow.study_id == sid, *where), names)
                for pk, tid, name, epoch, value in c.execute(q):
                    out.setdefault(tid, {})[name] = (epoch, value)
        return out

    def best_values(self, study: str, metric: str, mode: str = "max",
                    trial_ids: Iterable[str] | None = None) -> dict[str, tuple[int, float]]:
        """{trial_id: (epoch, value)}: each trial's best ``metric`` (``mode`` max or min) and the
        first epoch that reached it, by an aggregate query."""
        if mode not in ("max", "min"):
            raise ValueError(f"mode: max or min, got {mode!r}")
        agg = func.max if mode == "max" else func.min
        out: dict[str, tuple[int, float]] = {}
        with self.engine.connect() as c:
            sid = self._study_id(c, study)
            for where in _id_filters(trial_ids):
                scope = select(TrialRow.pk).where(TrialRow.study_id == sid, *where)
                best = (select(MetricRow.trial_pk.label("pk"), agg(MetricRow.value).label("v"))
                        .where(MetricRow.trial_pk.in_(scope), MetricRow.name == metric)
                        .group_by(MetricRow.trial_pk).subquery())
                q = (select(TrialRow.trial_id, func.min(MetricRow.epoch), best.c.v)
                     .select_from(best)
                     .join(MetricRow, (MetricRow.trial_pk == best.c.pk) & (MetricRow.name == metric)
                           & (MetricRow.value == best.c.v))
                     .join(TrialRow, TrialRow.pk == best.c.pk)
                     .group_by(TrialRow.trial_id, best.c.v))
                for tid, epoch, value in c.execute(q):
                    out[tid] = (epoch, value)
        return out

    def histories(self, study: str, trial_ids: Iterable[str],
                  metrics: Iterable[str] | None = None) -> dict[str, dict[str, list[tuple[int, float]]]]:
        """{trial_id: {metric: [(epoch, value), ...]}} in epoch order, for ``trial_ids`` only."""
        names = list(metrics) if metrics is not None else None
        out: dict[str, dict[str, list[tuple[int, float]]]] = {}
        with self.engine.connect() as c:
            sid = self._study_id(c, study)
            for where in _id_filters(list(trial_ids)):
                q = (select(TrialRow.trial_id, MetricRow.name, MetricRow.epoch, MetricRow.value)
                     .join(TrialRow, TrialRow.pk == MetricRow.trial_pk)
                     .where(TrialRow.study_id == sid, *where)
                     .order_by(MetricRow.trial_pk, MetricRow.name, MetricRow.epoch))
                if names is not None:
                    q = q.where(MetricRow.name.in_(names))
                for tid, name, epoch, value in c.execute(q):
                    out.setdefault(tid, {}).setdefault(name, []).append((epoch, value))
        return out

    def last_epochs(self, study: str) -> dict[str, int]:
        """{trial_id: the last epoch with a stored metric} (trials without metrics are absent)."""
        with self.engine.connect() as c:
            sid = self._study_id(c, study)
            q = (select(TrialRow.trial_id, func.max(MetricRow.epoch)).join(TrialRow, TrialRow.pk == MetricRow.trial_pk)
                 .where(TrialRow.study_id == sid).group_by(TrialRow.trial_id))
            return dict(c.execute(q).all())

    def iter_trial_chunks(self, studies: Iterable[str] | None = None, trial_ids: Iterable[str] | None = None, *,
                          metrics: str = "all", chunk: int = 1000) -> Iterator[tuple[str, list[TrialRecord]]]:
        """(study, up to ``chunk`` trials) at a time, each trial with its metrics: ``all`` epochs
        (``history`` and ``final``), only the ``final`` ones, or ``none``; configs are left out.
        Memory stays bounded by the chunk however large the database (keyset pagination on the
        trial's key, one metric query per chunk). Unknown study names raise KeyError."""
        if metrics not in ("all", "final", "none"):
            raise ValueError(f"metrics: all, final or none, got {metrics!r}")
        ids = None if trial_ids is None else sorted(set(trial_ids))
        with self.engine.connect() as c:
            q = select(StudyRow.id, StudyRow.name).order_by(StudyRow.name)
            found = c.execute(q).all()
        if studies is not None:
            wanted = list(dict.fromkeys(studies))
            known = {name: sid for sid, name in found}
            missing = [n for n in wanted if n not in known]
            if missing:
                raise KeyError(missing[0])
            found = [(known[n], n) for n in wanted]
        cols = (TrialRow.pk, TrialRow.trial_id, TrialRow.params, TrialRow.seed, TrialRow.status, TrialRow.n_params,
                TrialRow.flops, TrialRow.error, TrialRow.started_at, TrialRow.ended_at, TrialRow.attempts,
                TrialRow.error_kind)
        for sid, name in found:
            for where in _id_filters(ids):
                last = -1
                while True:
                    with self.engine.connect() as c:
                        rows = c.execute(select(*cols).where(TrialRow.study_id == sid, TrialRow.pk > last, *where)
                                         .order_by(TrialRow.pk).limit(chunk)).all()
                        if not rows:
                            break
                        last = rows[-1][0]
                        by_pk = {r[0]: TrialRecord(r[1], r[2], {}, r[3], r[4], r[5], r[6], r[7], _utc(r[8]),
                                                   _utc(r[9]), attempts=r[10], error_kind=r[11]) for r in rows}
                        pks = list(by_pk)
                        if metrics == "all":
                            mq = (select(MetricRow.trial_pk, MetricRow.name, MetricRow.epoch, MetricRow.value)
                                  .where(MetricRow.trial_pk.in_(pks))
                                  .order_by(MetricRow.trial_pk, MetricRow.name, MetricRow.epoch))
                            for pk, metric, epoch, value in c.execute(mq):
                                rec = by_pk[pk]
                                rec.history.setdefault(metric, []).append((epoch, value))
                                rec.final[metric] = value
                        elif metrics == "final":
                            for pk, _, metric, epoch, value in c.execute(_final_query(pks, None)):
                                rec = by_pk[pk]
                                rec.history[metric] = [(epoch, value)]
                                rec.final[metric] = value
                    yield name, list(by_pk.values())
                    if len(rows) < chunk:
                        break

    # -- reading ---------------------------------------------------------------------------
    def studies(self) -> list[tuple[str, str, int]]:
        """(name, description, number of trials) of every study."""
        with self._session() as s:
            q = (select(StudyRow.name, StudyRow.description, func.count(TrialRow.pk))
                 .outerjoin(TrialRow).group_by(StudyRow.id).order_by(StudyRow.name))
            return [tuple(r) for r in s.execute(q)]  # type: ignore[misc]

    @staticmethod
    def _record(r: TrialRow) -> TrialRecord:
        return TrialRecord(r.trial_id, r.params, r.config, r.seed, r.status, r.n_params, r.flops, r.error,
                           r.started_at, r.ended_at, provenance=dict(r.provenance or {}), attempts=r.attempts,
                           error_kind=r.error_kind)

    def load(self, name: str, *, history: bool = False) -> StudyRecord:
        """A study with its trials (configs included), each trial's last-epoch metrics, and
        optionally all epochs: built on ``trial_summaries``, ``final_values`` and ``histories``, so
        without ``history`` no per-epoch row is read."""
        info = self.study_info(name)
        summaries = self.trial_summaries(name, config=True)
        full_errors = self._errors(name)
        finals = self.final_values(name)
        hist = self.histories(name, [t.trial_id for t in summaries]) if history else {}
        trials = []
        for t in summaries:
            rec = TrialRecord(t.trial_id, t.params, t.config or {}, t.seed, t.status, t.n_params, t.flops,
                              full_errors.get(t.trial_id), t.started_at, t.ended_at,
                              provenance=t.provenance, attempts=t.attempts, error_kind=t.error_kind,
                              profile=t.profile)
            rec.final = {m: v for m, (_, v) in finals.get(t.trial_id, {}).items()}
            rec.history = hist.get(t.trial_id, {})
            trials.append(rec)
        return StudyRecord(info.name, info.description, info.spec, trials)

    def _errors(self, study: str) -> dict[str, str]:
        """{trial_id: full error} of the trials of ``study`` that have one."""
        with self.engine.connect() as c:
            sid = self._study_id(c, study)
            return dict(c.execute(select(TrialRow.trial_id, TrialRow.error)
                                  .where(TrialRow.study_id == sid, TrialRow.error.is_not(None))).all())

    def find_trial(self, trial_id: str) -> tuple[str, TrialRecord]:
        """(study name, the trial with every epoch and its replaced attempts) for a trial id or a
        unique prefix of one. KeyError if none matches, ValueError if several do."""
        with self._session() as s:
            like = trial_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = s.execute(select(TrialRow, StudyRow.name).join(StudyRow)
                             .where(TrialRow.trial_id.like(like, escape="\\")).limit(11)).all()
            exact = [r for r in rows if r[0].trial_id == trial_id]
            rows = exact or rows
            if not rows:
                raise KeyError(f"no trial '{trial_id}' in {self.display_url}")
            if len(rows) > 1:
                found = ", ".join(f"{t.trial_id} ({name})" for t, name in rows[:10])
                raise ValueError(f"'{trial_id}' matches several trials in {self.display_url}: {found}")
            row, study = rows[0]
            rec = self._record(row)
            for epoch, metric, value in s.execute(select(MetricRow.epoch, MetricRow.name, MetricRow.value)
                                                  .where(MetricRow.trial_pk == row.pk).order_by(MetricRow.epoch)):
                rec.final[metric] = value
                rec.history.setdefault(metric, []).append((epoch, value))
            for a in s.scalars(select(TrialAttemptRow).where(TrialAttemptRow.trial_pk == row.pk)
                               .order_by(TrialAttemptRow.attempt, TrialAttemptRow.pk)):
                rec.past_attempts.append({"attempt": a.attempt, "status": a.status, "error": a.error,
                                          "error_kind": a.error_kind, "provenance": a.provenance or {},
                                          "started_at": a.started_at, "ended_at": a.ended_at,
                                          "metrics": a.metrics, "archived_at": a.archived_at})
            return study, rec

    def counts(self) -> dict[str, int]:
        """Row counts of the result tables (for tests and `ablate db`); replaced attempts are
        counted by ``attempt_count``."""
        with self._session() as s:
            return {m.__tablename__: s.scalar(select(func.count()).select_from(m)) or 0
                    for m in (StudyRow, TrialRow, MetricRow)}

    def attempt_count(self) -> int:
        with self._session() as s:
            return s.scalar(select(func.count()).select_from(TrialAttemptRow)) or 0

    # -- bulk (dashboard, import) ------------------------------------------------------------
    def load_many(self, names: Iterable[str] | None = None, *, history: bool = False) -> list[StudyRecord]:
        """Several studies (all when ``names`` is None) in three queries, without ORM objects:
        what the dashboard reads on every request, fast for tens of thousands of trials."""
        with self.engine.connect() as s:  # Core rows: no ORM bookkeeping on 10^5..10^6 metric rows
            q = select(StudyRow.id, StudyRow.name, StudyRow.description, StudyRow.spec).order_by(StudyRow.name)
            if names is not None:
                q = q.where(StudyRow.name.in_(list(names)))
            studies = {sid: StudyRecord(name, desc, spec, []) for sid, name, desc, spec in s.execute(q)}
            if not studies:
                return []
            tq = (select(TrialRow.pk, TrialRow.study_id, TrialRow.trial_id, TrialRow.params, TrialRow.config,
                         TrialRow.seed, TrialRow.status, TrialRow.n_params, TrialRow.flops, TrialRow.error,
                         TrialRow.started_at, TrialRow.ended_at, TrialRow.provenance, TrialRow.attempts,
                         TrialRow.error_kind).order_by(TrialRow.pk))
            mq = select(MetricRow.trial_pk, MetricRow.epoch, MetricRow.name, MetricRow.value).order_by(MetricRow.epoch)
            if names is not None:
                tq = tq.where(TrialRow.study_id.in_(list(studies)))
                mq = mq.join(TrialRow).where(TrialRow.study_id.in_(list(studies)))
            by_pk: dict[int, TrialRecord] = {}
            for (pk, sid, tid, params, config, seed, status, n_params, flops, error, started, ended, prov, attempts,
                 kind) in s.execute(tq):
                rec = TrialRecord(tid, params, config, seed, status, n_params, flops, error, started, ended,
                                  provenance=dict(prov or {}), attempts=attempts, error_kind=kind)
                by_pk[pk] = rec
                studies[sid].trials.append(rec)
            for pk, epoch, metric, value in s.execute(mq):
                rec = by_pk[pk]
                rec.final[metric] = value  # ordered by epoch: the last one wins
                if history:
                    rec.history.setdefault(metric, []).append((epoch, value))
            return list(studies.values())

    def import_records(self, records: Iterable[StudyRecord], *, chunk: int = 20_000) -> int:
        """Insert whole studies (new names only) with bulk inserts: trials, their status, and their
        metrics (``history`` per epoch; a ``final`` value without history is stored at the last epoch).
        A record's ``trials`` may be any iterable (a generator): they are written ``chunk`` metric
        rows at a time, so a database of 10^5 generated trials needs no more memory than a chunk.
        Returns the number of trials inserted. Raises ValueError if a study name already exists."""
        n = 0
        with self._wsession.begin() as s:
            for rec in records:
                if s.scalar(select(StudyRow.id).where(StudyRow.name == rec.name)) is not None:
                    raise ValueError(f"study '{rec.name}' already exists in {self.url}")
                study = StudyRow(name=rec.name, description=rec.description, spec=rec.spec)
                s.add(study)
                s.flush()
                conn = s.connection()  # Core executemany: the ORM's per-row bookkeeping costs 5x here
                batch: list[TrialRecord] = []
                size = 0
                for t in rec.trials:
                    batch.append(t)
                    size += 1 + sum(len(h) for h in t.history.values()) + len(t.final)
                    if size >= chunk:
                        n += self._insert_trials(conn, study.id, batch)
                        batch, size = [], 0
                if batch:
                    n += self._insert_trials(conn, study.id, batch)
        return n

    @staticmethod
    def _insert_trials(conn: Any, study_id: int, trials: list[TrialRecord]) -> int:
        rows = [{"study_id": study_id, "trial_id": t.trial_id, "params": t.params, "config": t.config,
                 "seed": t.seed, "status": t.status, "n_params": t.n_params, "flops": t.flops,
                 "error": t.error, "started_at": t.started_at, "ended_at": t.ended_at,
                 "attempts": t.attempts or (0 if t.status == PENDING else 1),
                 "provenance": t.provenance or None, "error_kind": t.error_kind, "profile": t.profile}
                for t in trials]
        conn.execute(insert(TrialRow.__table__), rows)
        pks = dict(conn.execute(select(TrialRow.trial_id, TrialRow.pk).where(
            TrialRow.study_id == study_id, TrialRow.trial_id.in_([t.trial_id for t in trials]))).all())
        metrics: list[dict[str, Any]] = []
        for t in trials:
            pk = pks[t.trial_id]
            last = max((e for h in t.history.values() for e, _ in h), default=0)
            for name, hist in t.history.items():
                metrics += [{"trial_pk": pk, "epoch": e, "name": name, "value": float(v)} for e, v in hist]
            metrics += [{"trial_pk": pk, "epoch": last, "name": name, "value": float(v)}
                        for name, v in t.final.items() if name not in t.history]
        if metrics:
            conn.execute(insert(MetricRow.__table__), metrics)
        return len(rows)

    # -- dashboard reads (h2): change detection for the served cache, full errors -------------
    # -- change detection (the served dashboard's cache) -----------------------------------------
    def results_version(self) -> str:
        """A fingerprint of everything a results view shows, from a few aggregates that indexes
        or primary keys answer: it changes when a study is added or updated, a trial is added,
        starts, ends, changes status or is rerun, or a metric row is written (``add_metrics``
        deletes and inserts, so the largest metric id grows). Equal fingerprints: nothing to redo."""
        with self.engine.connect() as c:
            studies = c.execute(select(func.count(StudyRow.id), func.max(StudyRow.updated_at))).one()
            trials = c.execute(select(func.count(TrialRow.pk), func.max(TrialRow.started_at),
                                      func.max(TrialRow.ended_at), func.sum(TrialRow.attempts))).one()
            status = sorted(c.execute(select(TrialRow.status, func.count()).group_by(TrialRow.status)).all())
            metrics = c.execute(select(func.max(MetricRow.id))).scalar()
            attempts = c.execute(select(func.count(TrialAttemptRow.pk))).scalar()
        return repr((tuple(studies), tuple(trials), [tuple(s) for s in status], metrics, attempts))

    def trial_errors(self, study: str, trial_ids: Iterable[str]) -> dict[str, str]:
        """{trial_id: full stored error} of ``trial_ids`` of ``study`` that have one (the dashboard's
        trial details; ``trial_summaries`` carries only the first line)."""
        out: dict[str, str] = {}
        with self.engine.connect() as c:
            sid = self._study_id(c, study)
            for where in _id_filters(list(trial_ids)):
                out.update(c.execute(select(TrialRow.trial_id, TrialRow.error)
                                     .where(TrialRow.study_id == sid, TrialRow.error.is_not(None), *where)).all())
        return out
