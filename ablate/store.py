"""The result database: studies, trials and per-epoch metrics (SQLAlchemy 2 typed ORM).

Only this module touches SQL. Every method is one short transaction, so a crash or kill at any
point leaves the database consistent. Several drivers may share one database: a trial is claimed
with a lease (``claim``/``renew``/``release``) so that exactly one driver writes it, and a killed
driver's lease runs out for a successor to take over. Results are append-only: a completed
trial's status and metrics are never changed again, except by ``rerun`` (an explicit user request),
which keeps the replaced attempt in ``trial_attempts``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from sqlalchemy import (JSON, BigInteger, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData,
                        PrimaryKeyConstraint, String, Table, Text, UniqueConstraint, create_engine, delete, event,
                        func, insert, inspect, or_, select, text, update)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

# the read side (SQL text, no ORM) and the records it returns; re-exported: ``ablate.store`` stays
# the one place a writer imports from
from ablate.store_reads import (CODE_FIELDS, COMPLETED, DEFAULT_DB_FILE, ERROR_HEAD, FAILED,  # noqa: F401
                                IN_CHUNK, INTERRUPTED, MIGRATIONS, PENDING, RECURRING, RUNNING, SQLITE_BUSY_MS,
                                TRANSIENT, DatabaseError, Reader, StudyInfo, StudyRecord, TrialRecord, TrialState,
                                TrialSummary, _EngineSQL, _first_line, arm_key, check_schema, default_db_url,
                                describe_error, display_epoch, head_revision, known_revisions, masked,
                                normalize_url, owner_is_dead)


INTERRUPTED_ERROR = "interrupted: the driver stopped"
DEFAULT_LEASE_S = 60.0
PG_LOCK_KEY = int.from_bytes(b"ablate", "big")  # advisory lock around migrations

log = logging.getLogger("ablate.store")
T = TypeVar("T")


def lease_seconds() -> float:
    """How long a claim holds without renewal: ``ABLATE_LEASE_S``, default 60 s."""
    try:
        return max(0.5, float(os.environ.get("ABLATE_LEASE_S") or DEFAULT_LEASE_S))
    except ValueError:
        return DEFAULT_LEASE_S


def new_owner() -> str:
    """A driver id, ``host:pid:random``: unique per run, and on this host checkable for liveness."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(dt: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back; they were written in UTC."""
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


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


class TrialFinalRow(Base):
    """Each trial's final value of each metric: the metric row at its last epoch (0005), kept by
    every write of ``metrics`` in the same transaction, so that a table reads one row per trial
    and metric by primary key instead of looking for the last epoch among all of them."""

    __tablename__ = "trial_finals"
    __table_args__ = {"sqlite_with_rowid": False}  # SQLite: the rows live in the primary key's b-tree
    trial_pk: Mapped[int] = mapped_column(ForeignKey("trials.pk", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)


# a trial's final rows, recomputed from its metric rows (``_refresh_finals``); {names}: optional filter
_REFRESH_FINALS = ("INSERT INTO trial_finals (trial_pk, name, epoch, value) "
                   "SELECT m.trial_pk, m.name, m.epoch, m.value FROM metrics m JOIN "
                   "(SELECT name, max(epoch) AS e FROM metrics WHERE trial_pk = :pk{names} GROUP BY name) f "
                   "ON m.name = f.name AND m.epoch = f.e WHERE m.trial_pk = :pk")


def _refresh_finals(s: Session, pk: int, names: list[str] | None = None) -> None:
    """Recompute trial ``pk``'s rows of ``trial_finals`` (those of ``names``, or all) from its metric
    rows, inside the caller's transaction: whatever was written or deleted, the finals agree."""
    params: dict[str, Any] = {"pk": pk}
    where = ""
    if names is not None:
        if not names:
            return
        params.update({f"n{i}": n for i, n in enumerate(names)})
        where = " AND name IN (" + ", ".join(f":n{i}" for i in range(len(names))) + ")"
    s.execute(text(f"DELETE FROM trial_finals WHERE trial_pk = :pk{where}"), params)
    s.execute(text(_REFRESH_FINALS.format(names=where)), params)


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


def _current_revision(conn: Any) -> str | None:
    """What alembic's MigrationContext.get_current_revision reads (one linear history, one row)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


# alembic's own version table, as its ``upgrade`` creates it (same name, type and constraint name)
_ALEMBIC_VERSION = Table("alembic_version", MetaData(), Column("version_num", String(32), nullable=False),
                         PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))


def _create_at_head(conn: Any, head: str) -> None:
    """An empty database's schema at ``head`` in one step: the ORM's tables and alembic's version row,
    as alembic's docs advise for a new database ("create_all, then stamp head"), without importing
    alembic and running every migration (~0.4 s of a first ``ablate run``). tests/test_store.py holds
    the result to the migrations' schema, table by table, on SQLite and PostgreSQL."""
    Base.metadata.create_all(conn, checkfirst=False)
    _ALEMBIC_VERSION.create(conn)
    conn.execute(_ALEMBIC_VERSION.insert().values(version_num=head))


def _upgrade(conn: Any) -> None:
    from alembic import command

    command.upgrade(_alembic_config(conn), "head")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest alembic revision (db/versions), safe with any number of
    processes at once: SQLite serializes on BEGIN IMMEDIATE, PostgreSQL on an advisory lock, and
    whoever comes second finds the schema at head and does nothing. An empty database gets the
    newest schema at once (``_create_at_head``); one at an older revision is upgraded by alembic."""
    head = head_revision()
    with engine.connect() as conn:  # read first: a database at head is never written (read-only files)
        if _current_revision(conn) == head:
            return  # (nor is alembic imported: a rerun's driver pays nothing for it)
    with engine.execution_options(ablate_write=True).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})  # released at commit
        if _current_revision(conn) != head:
            if inspect(conn).get_table_names():
                _upgrade(conn)
            else:
                _create_at_head(conn, head)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            _sqlite_wal(conn.connection.dbapi_connection.cursor())


# -- what is wrong with a database, in one line ---------------------------------------------------
def _sqlite_path(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" or u.query.get("uri"):
        return None
    return Path(u.database)


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


class Store(Reader):
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
        self._sql = _EngineSQL(self.engine)  # the read API (Reader): SQL text on this engine
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
        if check_schema(self.display_url, tables, revision, create):
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
            _refresh_finals(s, row.pk, list(values))
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
            _refresh_finals(s, row.pk, list(values))
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
                s.execute(delete(TrialFinalRow).where(TrialFinalRow.trial_pk == row.pk))
                row.status, row.error, row.error_kind, row.provenance = PENDING, None, None, None
                row.started_at, row.ended_at, row.claimed_by, row.lease_until = None, None, None, None
                n += 1
        return n

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
        finals: list[dict[str, Any]] = []  # the row of each metric's last epoch, as _refresh_finals finds it
        for t in trials:
            pk = pks[t.trial_id]
            last = max((e for h in t.history.values() for e, _ in h), default=0)
            for name, hist in t.history.items():
                metrics += [{"trial_pk": pk, "epoch": e, "name": name, "value": float(v)} for e, v in hist]
                if hist:  # an epoch given twice fails on the metrics' unique key below
                    e, v = max(hist, key=lambda ev: ev[0])
                    finals.append({"trial_pk": pk, "name": name, "epoch": e, "value": float(v)})
            for name, v in t.final.items():
                if name not in t.history:
                    metrics.append({"trial_pk": pk, "epoch": last, "name": name, "value": float(v)})
                    finals.append({"trial_pk": pk, "name": name, "epoch": last, "value": float(v)})
        if metrics:
            conn.execute(insert(MetricRow.__table__), metrics)
            conn.execute(insert(TrialFinalRow.__table__), finals)
        return len(rows)
