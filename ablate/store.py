"""The result database: studies, trials and per-epoch metrics (SQLAlchemy 2 typed ORM).

Only this module touches SQL. The driver is the single writer; every method is one transaction, so
a crash or kill at any point leaves the database consistent. A rerun resets trials that did not
complete (deleting their partial metrics) and leaves completed ones alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import (JSON, BigInteger, DateTime, Float, ForeignKey, Integer, String, Text,
                        UniqueConstraint, create_engine, delete, event, func, insert, select)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

DEFAULT_DB_FILE = "ablate.db"
MIGRATIONS = Path(__file__).resolve().parent.parent / "db"

PENDING, RUNNING, COMPLETED, FAILED = "pending", "running", "completed", "failed"


def default_db_url() -> str:
    """``ABLATE_DB`` if set, else an SQLite file ``ablate.db`` in the current directory."""
    return os.environ.get("ABLATE_DB") or f"sqlite:///{Path(DEFAULT_DB_FILE).resolve()}"


def normalize_url(url: str) -> str:
    """Plain ``postgresql://`` means psycopg 3 here (the driver ablate installs)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _now() -> datetime:
    return datetime.now(timezone.utc)


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
    __table_args__ = (UniqueConstraint("study_id", "trial_id", name="uq_trials_study_trial"),)
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
    study: Mapped[StudyRow] = relationship(back_populates="trials")


class MetricRow(Base):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("trial_pk", "epoch", "name", name="uq_metrics_trial_epoch_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_pk: Mapped[int] = mapped_column(ForeignKey("trials.pk", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)


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


@dataclass
class StudyRecord:
    name: str
    description: str
    spec: dict[str, Any]
    trials: list[TrialRecord]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")  # readers (dashboard) never block the writer
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, future=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest alembic revision (db/versions)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Store:
    """Typed access to the result database at ``url`` (any SQLAlchemy URL)."""

    def __init__(self, url: str | None = None, *, create: bool = True):
        self.url = normalize_url(url or default_db_url())
        self.engine = make_engine(self.url)
        if create:
            migrate(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # -- writing (driver only) -------------------------------------------------------------
    def register(self, name: str, description: str, spec: dict[str, Any],
                 trials: Iterable[dict[str, Any]]) -> dict[str, str]:
        """Create or update the study and insert its missing trials as pending.

        ``trials``: dicts with trial_id, params, config, seed, n_params, flops.
        Returns {trial_id: status} for every trial of this expansion.
        """
        with self._session.begin() as s:
            study = s.scalar(select(StudyRow).where(StudyRow.name == name))
            if study is None:
                study = StudyRow(name=name, description=description, spec=spec)
                s.add(study)
                s.flush()
            else:
                study.description, study.spec, study.updated_at = description, spec, _now()
            existing = {t.trial_id: t for t in s.scalars(select(TrialRow).where(TrialRow.study_id == study.id))}
            status: dict[str, str] = {}
            for t in trials:
                row = existing.get(t["trial_id"])
                if row is None:
                    s.add(TrialRow(study_id=study.id, status=PENDING, attempts=0, **t))
                    status[t["trial_id"]] = PENDING
                else:
                    row.n_params, row.flops = t.get("n_params"), t.get("flops")
                    status[t["trial_id"]] = row.status
            return status

    def _trial(self, s: Session, study: str, trial_id: str) -> TrialRow:
        row = s.scalar(select(TrialRow).join(StudyRow).where(StudyRow.name == study, TrialRow.trial_id == trial_id))
        if row is None:
            raise KeyError(f"trial {trial_id} of study {study} is not registered")
        return row

    def start(self, study: str, trial_id: str) -> None:
        """Mark running and drop any partial metrics of an earlier, interrupted attempt."""
        with self._session.begin() as s:
            row = self._trial(s, study, trial_id)
            row.status, row.started_at, row.ended_at, row.error = RUNNING, _now(), None, None
            row.attempts += 1

    def add_metrics(self, study: str, trial_id: str, epoch: int, values: dict[str, float]) -> None:
        """One epoch's metrics in one batched insert (re-reported epochs replace the old values)."""
        with self._session.begin() as s:
            row = self._trial(s, study, trial_id)
            s.execute(delete(MetricRow).where(MetricRow.trial_pk == row.pk, MetricRow.epoch == epoch,
                                              MetricRow.name.in_(list(values))))
            if values:
                s.execute(insert(MetricRow), [{"trial_pk": row.pk, "epoch": epoch, "name": k, "value": float(v)}
                                              for k, v in values.items()])

    def update_provenance(self, study: str, trial_id: str, values: dict[str, Any]) -> None:
        """(interim: kept by the schema change of the concurrency work)"""

    def finish(self, study: str, trial_id: str, error: str | None = None, *, error_kind: str | None = None) -> None:
        with self._session.begin() as s:
            row = self._trial(s, study, trial_id)
            row.status = FAILED if error else COMPLETED
            row.error, row.ended_at = error, _now()

    def mark_interrupted(self, study: str) -> int:
        """Trials left running by a driver that stopped: failed, so a rerun redoes them."""
        with self._session.begin() as s:
            rows = s.scalars(select(TrialRow).join(StudyRow).where(StudyRow.name == study, TrialRow.status == RUNNING))
            n = 0
            for row in rows:
                row.status, row.error, row.ended_at = FAILED, "interrupted: the driver stopped", _now()
                n += 1
            return n

    # -- reading ---------------------------------------------------------------------------
    def studies(self) -> list[tuple[str, str, int]]:
        """(name, description, number of trials) of every study."""
        with self._session() as s:
            q = (select(StudyRow.name, StudyRow.description, func.count(TrialRow.pk))
                 .outerjoin(TrialRow).group_by(StudyRow.id).order_by(StudyRow.name))
            return [tuple(r) for r in s.execute(q)]  # type: ignore[misc]

    def load(self, name: str, *, history: bool = False) -> StudyRecord:
        """A study with its trials, each trial's last-epoch metrics, and optionally all epochs."""
        with self._session() as s:
            study = s.scalar(select(StudyRow).where(StudyRow.name == name))
            if study is None:
                raise KeyError(name)
            rows = list(s.scalars(select(TrialRow).where(TrialRow.study_id == study.id).order_by(TrialRow.pk)))
            by_pk = {r.pk: TrialRecord(r.trial_id, r.params, r.config, r.seed, r.status, r.n_params, r.flops,
                                       r.error, r.started_at, r.ended_at) for r in rows}
            q = (select(MetricRow.trial_pk, MetricRow.epoch, MetricRow.name, MetricRow.value)
                 .join(TrialRow).where(TrialRow.study_id == study.id).order_by(MetricRow.epoch))
            for pk, epoch, metric, value in s.execute(q):
                rec = by_pk[pk]
                rec.final[metric] = value  # ordered by epoch: the last one wins
                if history:
                    rec.history.setdefault(metric, []).append((epoch, value))
            return StudyRecord(study.name, study.description, study.spec, list(by_pk.values()))

    def counts(self) -> dict[str, int]:
        """Row counts per table (for tests and `ablate db`)."""
        with self._session() as s:
            return {m.__tablename__: s.scalar(select(func.count()).select_from(m)) or 0
                    for m in (StudyRow, TrialRow, MetricRow)}

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
                         TrialRow.started_at, TrialRow.ended_at).order_by(TrialRow.pk))
            mq = select(MetricRow.trial_pk, MetricRow.epoch, MetricRow.name, MetricRow.value).order_by(MetricRow.epoch)
            if names is not None:
                tq = tq.where(TrialRow.study_id.in_(list(studies)))
                mq = mq.join(TrialRow).where(TrialRow.study_id.in_(list(studies)))
            by_pk: dict[int, TrialRecord] = {}
            for pk, sid, tid, params, config, seed, status, n_params, flops, error, started, ended in s.execute(tq):
                rec = TrialRecord(tid, params, config, seed, status, n_params, flops, error, started, ended)
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
        Returns the number of trials inserted. Raises ValueError if a study name already exists."""
        n = 0
        with self._session.begin() as s:
            for rec in records:
                if s.scalar(select(StudyRow.id).where(StudyRow.name == rec.name)) is not None:
                    raise ValueError(f"study '{rec.name}' already exists in {self.url}")
                study = StudyRow(name=rec.name, description=rec.description, spec=rec.spec)
                s.add(study)
                s.flush()
                rows = [{"study_id": study.id, "trial_id": t.trial_id, "params": t.params, "config": t.config,
                         "seed": t.seed, "status": t.status, "n_params": t.n_params, "flops": t.flops,
                         "error": t.error, "started_at": t.started_at, "ended_at": t.ended_at,
                         "attempts": 0 if t.status == PENDING else 1} for t in rec.trials]
                conn = s.connection()  # Core executemany: the ORM's per-row bookkeeping costs 5x here
                for i in range(0, len(rows), chunk):
                    conn.execute(insert(TrialRow.__table__), rows[i:i + chunk])
                pks = dict(s.execute(select(TrialRow.trial_id, TrialRow.pk).where(TrialRow.study_id == study.id)).all())
                metrics: list[dict[str, Any]] = []
                for t in rec.trials:
                    last = max((e for h in t.history.values() for e, _ in h), default=0)
                    for name, hist in t.history.items():
                        metrics += [{"trial_pk": pks[t.trial_id], "epoch": e, "name": name, "value": float(v)}
                                    for e, v in hist]
                    metrics += [{"trial_pk": pks[t.trial_id], "epoch": last, "name": name, "value": float(v)}
                                for name, v in t.final.items() if name not in t.history]
                    if len(metrics) >= chunk:
                        conn.execute(insert(MetricRow.__table__), metrics)
                        metrics = []
                if metrics:
                    conn.execute(insert(MetricRow.__table__), metrics)
                n += len(rows)
        return n
