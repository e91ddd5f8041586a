"""The result database's read side: every query a results view needs, written once as SQL text with
named parameters, run through ``sqlite3`` directly on SQLite files and through SQLAlchemy's
``text()`` on any other database (PostgreSQL), so that the same SQL gives the same values on both.

Why not the ORM: a command that only reads (``studies``, ``table``, ``export``, ``show``,
``dashboard --out``) would pay ~0.5 s to import SQLAlchemy before its first query, and more than
that again to turn 10^5 rows into typed objects. This module imports no SQLAlchemy at module level;
``ablate.store`` (the ORM models and every write) builds on it: ``Store`` is a ``Reader`` whose
queries run on its engine. ``open_reader`` is the read-only entry point: on an SQLite file it never
creates a file or a schema (``mode=rw`` never creates the file, ``PRAGMA query_only`` refuses any
write; a read-write handle is kept so that SQLite removes its ``-wal``/``-shm`` files on close, which
a ``mode=ro`` handle leaves behind), and anything else goes through ``Store(url, create=False)``.

The records a read returns (``TrialRecord``, ``StudyRecord``, ``TrialSummary`` ...) and the status
names live here too, so that modules which only show results never import ``ablate.store``.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ablate._gc import paused_gc

DEFAULT_DB_FILE = "ablate.db"
MIGRATIONS = Path(__file__).resolve().parent.parent / "db"
SQLITE_BUSY_MS = 30_000

PENDING, RUNNING, COMPLETED, FAILED, INTERRUPTED = "pending", "running", "completed", "failed", "interrupted"
RECURRING, TRANSIENT = "recurring", "transient"  # error_kind: fails again on rerun / may pass on rerun
CODE_FIELDS = ("ablate_version", "git_commit", "git_dirty")  # = ablate.provenance.CODE_FIELDS (no import here)
ERROR_HEAD = 2000  # characters of a trial's error read for its first line (summaries)
IN_CHUNK = 5000  # ids per IN (...) list: SQLite allows 32766 bound values, PostgreSQL 65535


class DatabaseError(Exception):
    """The database cannot be used; the message is one line naming the (masked) URL."""


# -- records ---------------------------------------------------------------------------------------
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
    # arm_key(params) where the reader computed it once per arm (light summaries); None: compute it
    _arm: str | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class TableTrial:
    """A trial as a table reads it (``Reader.table_trials``): the fields a table shows, nothing per
    epoch, no error, times or full provenance, and no config until the table asks for its arms'
    (``StudyRecord.configs``). ``arm_params`` and ``provenance`` (only the code fields) are shared
    by the trials that have the same ones: read-only. At 10^5 trials a slotted record with shared
    dicts is what keeps building them cheaper than the SQL that reads them."""

    trial_id: str
    arm_params: dict[str, Any]  # the axis values without the seed, in the stored order
    _arm: str  # arm_key(arm_params): the table groups by it
    seed: int
    status: str
    n_params: int | None
    flops: int | None
    error_kind: str | None
    profile: str | None
    final: dict[str, float]
    provenance: dict[str, Any]
    config: dict[str, Any]

    @property
    def params(self) -> dict[str, Any]:
        return {**self.arm_params, "seed": self.seed}


@dataclass
class StudyRecord:
    name: str
    description: str
    spec: dict[str, Any]
    trials: list[TrialRecord]
    # for trials read without their config (TableTrial): {trial_id: config} of the ids asked
    configs: Callable[[list[str]], dict[str, dict[str, Any]]] | None = field(default=None, repr=False,
                                                                              compare=False)


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
    _arm: str | None = field(default=None, repr=False)

    @property
    def arm(self) -> str:
        """The axis values without the seed, as canonical JSON: trials of one arm share it."""
        return self._arm if self._arm is not None else arm_key(self.params)


@dataclass
class TrialState:
    """Who holds a trial and in which state (what the claim loop of ``orchestrate`` polls)."""

    status: str
    claimed_by: str | None
    lease_until: datetime | None
    ended_at: datetime | None

    def held_by_other(self, owner: str, now: datetime | None = None) -> bool:
        return (self.claimed_by is not None and self.claimed_by != owner and self.lease_until is not None
                and self.lease_until > (now or datetime.now(timezone.utc)) and not owner_is_dead(self.claimed_by))


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` is a driver of this host whose process is gone (a killed driver
    whose lease has not run out yet); other hosts' drivers are judged by their lease alone."""
    import socket

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


_ARM_JSON = json.JSONEncoder(sort_keys=True)  # = json.dumps(..., sort_keys=True), without a new encoder per call
# the C encoder behind it, made once: ``JSONEncoder.encode`` makes one per call (half the cost of a
# key, and a 10,000-trial page asks for 2,500); None where the interpreter has no C accelerator
_ARM_C_JSON = (json.encoder.c_make_encoder(None, _ARM_JSON.default, json.encoder.encode_basestring_ascii, None, ": ",
                                           ", ", True, False, True)
               if json.encoder.c_make_encoder is not None else None)


def arm_key(params: dict[str, Any]) -> str:
    """Canonical JSON of a trial's axis values without its seed (the key of its arm)."""
    if "seed" in params or type(params) is not dict:
        params = {k: v for k, v in params.items() if k != "seed"}
    return "".join(_ARM_C_JSON(params, 0)) if _ARM_C_JSON is not None else _ARM_JSON.encode(params)


def display_epoch(epoch: int | None) -> int | None:
    """The epoch as a person counts it (from 1); the database stores the trainer's 0-based index."""
    return None if epoch is None else epoch + 1


def _first_line(error: str | None) -> str | None:
    """An error's message: its first non-empty line (the exception's own message comes first)."""
    if not error:
        return error
    return next((ln.strip() for ln in error.splitlines() if ln.strip()), "")


# -- URLs and what is wrong with a database ---------------------------------------------------------
def default_db_url() -> str:
    """``ABLATE_DB`` if set, else an SQLite file ``ablate.db`` in the current directory."""
    return os.environ.get("ABLATE_DB") or f"sqlite:///{Path(DEFAULT_DB_FILE).resolve()}"


def normalize_url(url: str) -> str:
    """Plain ``postgresql://`` means psycopg 3 here (the driver ablate installs)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def masked(url: str) -> str:
    """The URL as it may be printed: password replaced by ***. A URL without credentials is printed
    as it is (without importing SQLAlchemy); one with them as SQLAlchemy renders it."""
    if "@" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: print nothing after the scheme's credentials
        return url.split("@", 1)[-1]


def sqlite_file(url: str) -> Path | None:
    """The file of a plain SQLite URL (``sqlite:///path``), or None for every other URL (a server,
    ``:memory:``, a URL with a query or escapes: ``Store`` handles those)."""
    scheme, sep, rest = url.partition(":///")
    if not sep or scheme not in ("sqlite", "sqlite+pysqlite") or not rest or any(c in rest for c in "?%#"):
        return None
    return None if rest == ":memory:" else Path(rest)


def describe_error(exc: BaseException, url: str) -> str:
    """One line: the masked URL and what is wrong with the database behind it."""
    where = masked(url)
    msg = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = msg[0] if msg else type(exc).__name__
    low = str(getattr(exc, "orig", None) or exc).lower()
    kinds = {c.__name__ for c in type(exc).__mro__}  # SQLAlchemy's classes, without importing it
    if "NoSuchModuleError" in kinds or "can't load plugin" in low:
        what = "unknown database URL scheme or driver (use sqlite:///path.db or postgresql://user@host/db)"
    elif "ArgumentError" in kinds:
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


def known_revisions() -> list[str]:
    """Schema revisions in db/versions, oldest first, read from the file names (``NNNN_what.py``,
    revision id ``NNNN``; tests/test_store.py holds alembic's own graph to this list), so commands
    that only read check a database's schema without importing alembic (~0.3 s)."""
    return sorted(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def head_revision() -> str:
    return known_revisions()[-1]


OUR_TABLES = {"studies", "trials", "metrics", "trial_finals", "trial_attempts", "alembic_version"}


def check_schema(display_url: str, tables: set[str], revision: str | None, create: bool) -> bool:
    """Raise DatabaseError when the database is not (or not yet) an ablate database this ablate can
    read; returns whether its schema must be brought to the head revision first."""
    if not tables:
        if not create:
            raise DatabaseError(f"database {display_url}: holds no ablate results yet (empty; "
                                "`ablate run` creates the schema)")
        return True
    if revision is None:
        foreign = sorted(tables - OUR_TABLES)[:5]
        raise DatabaseError(f"database {display_url}: not an ablate database (tables "
                            f"{', '.join(foreign or sorted(tables)[:5])} without ablate's schema version); "
                            "use another database")
    if revision not in known_revisions():
        raise DatabaseError(f"database {display_url}: schema revision {revision} is not one this "
                            "ablate knows (written by a newer ablate, or not ablate's)")
    return revision != head_revision()


# -- running SQL text ------------------------------------------------------------------------------
Query = Callable[..., list[Any]]  # q(sql, params) -> rows (tuples)


class _SqliteSQL:
    """SQL text on an SQLite file through the standard library: one read transaction per snapshot,
    on a connection of the calling thread (safe from any thread: the served dashboard answers
    requests on several). Inside ``kept()`` a thread's connection is kept for its next snapshot:
    opening one (and SQLite reading the schema again on its first query) cost more than the
    queries of a 10,000-trial dashboard's ~80 small reads. Outside, each snapshot closes its
    connection, so that nothing holds the file between reads (SQLite then removes its
    ``-wal``/``-shm`` files, and a database file replaced at the path is not shadowed by a stale WAL)."""

    dialect = "sqlite"

    def __init__(self, path: Path, url: str):
        import threading

        self.url = url
        self.path = path
        self._idle = threading.local()  # .con, .ident, .depth: this thread's kept connection, its file, kept()s
        if not os.access(path.parent, os.W_OK) and not Path(f"{path}-wal").exists():
            # a folder nobody can write: no process can be writing the file, and SQLite could not
            # create the -shm file it needs to read a WAL database, so read it as immutable
            self.uri = f"file:{path}?mode=ro&immutable=1"
        else:
            self.uri = f"file:{path}?mode=rw"  # never creates the file; query_only refuses writes

    def _connect(self) -> tuple[Any, tuple[int, int] | None]:
        """(a connection, the identity of the file it opened): this thread's kept one if the file at
        the path is still the one it opened, else a new one."""
        import sqlite3

        con = getattr(self._idle, "con", None)
        if con is not None:  # taken: a snapshot opened inside this one gets a connection of its own
            self._idle.con = None
            ident = self._ident()
            if ident is not None and self._idle.ident == ident:
                return con, ident
            con.close()  # the file was replaced (or removed) since: read the one at the path now
        ident = self._ident()  # before connecting: a file replaced in between is seen at the next read
        try:
            con = sqlite3.connect(self.uri, uri=True, timeout=SQLITE_BUSY_MS / 1000, isolation_level=None,
                                  check_same_thread=False)
            con.execute("PRAGMA query_only=1")
        except sqlite3.Error as e:
            raise DatabaseError(describe_error(e, self.url)) from None
        return con, ident

    def _ident(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    @contextmanager
    def snapshot(self) -> Iterator[Query]:
        import sqlite3

        con, ident = self._connect()
        ok = False
        try:
            con.execute("BEGIN")  # every query of one read sees the same snapshot

            def q(sql: str, params: dict[str, Any] | None = None) -> list[Any]:
                return con.execute(sql, params or {}).fetchall()

            try:
                yield q
            except sqlite3.Error as e:
                raise DatabaseError(describe_error(e, self.url)) from None
            con.execute("COMMIT")  # ends the read transaction: the next snapshot sees newer writes
            ok = True
        except sqlite3.Error as e:
            raise DatabaseError(describe_error(e, self.url)) from None
        finally:
            if ok and getattr(self._idle, "depth", 0) and getattr(self._idle, "con", None) is None:
                self._idle.con, self._idle.ident = con, ident
            else:
                con.close()  # ends the read transaction

    @contextmanager
    def kept(self) -> Iterator[None]:
        """Keep this thread's connection between the snapshots of the block (see the class doc)."""
        self._idle.depth = getattr(self._idle, "depth", 0) + 1
        try:
            yield
        finally:
            self._idle.depth -= 1
            if not self._idle.depth:
                self.close()

    def close(self) -> None:
        """Close this thread's kept connection."""
        con = getattr(self._idle, "con", None)
        self._idle.con = None
        if con is not None:
            con.close()


class _EngineSQL:
    """SQL text on a SQLAlchemy engine (PostgreSQL, or the SQLite of a writing ``Store``)."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.dialect = engine.dialect.name

    @contextmanager
    def snapshot(self) -> Iterator[Query]:
        from sqlalchemy import text

        with self.engine.connect() as c:
            yield lambda sql, params=None: c.execute(text(sql), params or {}).all()


def _in(name: str, values: list[Any]) -> tuple[str, dict[str, Any]]:
    """``(:name0, :name1, ...)`` and its parameters: an IN list in named-parameter SQL."""
    params = {f"{name}{i}": v for i, v in enumerate(values)}
    return "(" + ", ".join(f":{k}" for k in params) + ")", params


def _in_list(dialect: str, column: str, name: str, values: list[Any]) -> tuple[str, dict[str, Any]]:
    """``column`` is one of ``values``, as a condition with one parameter however many values: a
    JSON array unpacked by ``json_each`` on SQLite, an array on PostgreSQL (``= ANY``)."""
    if dialect == "sqlite":
        return f"{column} IN (SELECT value FROM json_each(:{name}))", {name: json.dumps(values)}
    return f"{column} = ANY(:{name})", {name: list(values)}


def _id_chunks(trial_ids: Iterable[str] | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """`` AND trial_id IN (...)`` clauses that select ``trial_ids`` in lists of bounded length
    (one empty clause: every trial)."""
    if trial_ids is None:
        yield "", {}
        return
    ids = sorted(set(trial_ids))
    for i in range(0, len(ids), IN_CHUNK):
        sql, params = _in("id", ids[i:i + IN_CHUNK])
        yield f" AND trial_id IN {sql}", params


_SCAN = json.JSONDecoder().scan_once  # the C scanner behind json.loads, where there is one


def _loads(text: str) -> Any:
    """``json.loads(text)`` for text as the database holds it (no white space around the value),
    by the decoder's scanner itself: half the cost of ``json.loads`` (its checks and white-space
    matches), which a 10,000-trial page calls ~5,000 times. Any other text goes to ``json.loads``
    (which also raises its own error for what is not JSON)."""
    try:
        value, end = _SCAN(text, 0)
    except Exception:  # StopIteration (white space first, or no value), or not JSON
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def _json(v: Any) -> Any:
    """A JSON column's value: SQLite hands back the text, psycopg the parsed value."""
    if type(v) is str:
        return _loads(v)
    return json.loads(v) if isinstance(v, (str, bytes)) else v


def _time(v: Any) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite keeps ISO text, written in UTC)."""
    if v is None:
        return None
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v


def _bool(v: Any) -> bool | None:
    """A JSON boolean extracted by the database: 1/0 from SQLite, 'true'/'false' from PostgreSQL."""
    return None if v is None else v in (1, True, "true")


# JSON fields read in SQL: the two dialects spell it differently, and only here
def _code_json(dialect: str) -> str:
    """The code fields of a trial's provenance (``CODE_FIELDS``) as one JSON array text: one parse of
    the stored provenance per trial instead of one per field (~0.1 s per 10^5 trials of ~600 bytes
    each on SQLite), and one ``json.loads`` per distinct array in Python (a run's trials share it)."""
    if dialect == "sqlite":
        return f"json_extract(provenance, {', '.join(repr('$.' + k) for k in CODE_FIELDS)})"
    return f"CAST(json_build_array({', '.join(f'provenance -> {k!r}' for k in CODE_FIELDS)}) AS text)"


def _code_fields(array: Any) -> dict[str, Any]:
    """{code field: value} of a ``_code_json`` array, without the fields not stored."""
    values = _json(array) if array is not None else None
    if not isinstance(values, list) or len(values) != len(CODE_FIELDS):
        values = [None] * len(CODE_FIELDS)
    return {k: v for k, v in zip(CODE_FIELDS, (values[0], values[1], _bool(values[2]))) if v is not None}


def _arm_text(dialect: str) -> str:
    """A trial's params without its seed, as the database writes them: equal for the trials of one
    arm (a cache key for ``arm_key``, which then runs once per arm, not once per trial)."""
    if dialect == "sqlite":
        return "json_remove(params, '$.seed')"
    return "CAST(CAST(params AS jsonb) - 'seed' AS text)"


def _seedless(raw: Any, seed: Any, arms: dict[Any, tuple[dict[str, Any], str]],
              key: Any = None) -> tuple[dict[str, Any], str]:
    """(a trial's params without its seed, its arm key) from the params text SQLite stores and the
    trial's seed, parsing JSON once per arm: the text of a trial written by ablate ends with its
    seed (``, "seed": 4}``), and what comes before it is the same for every trial of its arm, so it
    is the cache key (the database's ``json_remove`` of the seed costs more, at 10^4 trials, than
    this and the rest of the trial's read together). Any other text is parsed whole. ``key``: the
    database's own text of the params without the seed (``_arm_text``: PostgreSQL, whose driver
    hands over parsed params), the cache key instead. The dict is shared by the arm's trials:
    read-only."""
    return _arm(raw, None if key is not None else _seed_head(raw, seed), arms, key)


_SEED_TAILS: dict[int, tuple[str, str]] = {}  # seed -> the two endings of params text with it (a few seeds)


def _seed_head(raw: Any, seed: Any) -> str | None:
    """The params text before its seed (``, "seed": 4}``) when ``raw`` is text that ends with it, else None."""
    if type(seed) is int and type(raw) is str:
        tails = _SEED_TAILS.get(seed)
        if tails is None:
            tails = (f', "seed": {seed}}}', f',"seed":{seed}}}')
            if len(_SEED_TAILS) < 1024:
                _SEED_TAILS[seed] = tails
        for tail in tails:
            if raw.endswith(tail):
                return raw[:len(raw) - len(tail)]
    return None


def _arm(raw: Any, head: str | None, arms: dict[Any, tuple[dict[str, Any], str]],
         key: Any) -> tuple[dict[str, Any], str]:
    """``_seedless`` given the text before the seed (``_seed_head``), once per trial."""
    if key is not None:
        entry = arms.get(key)
        if entry is None:
            a = {k: v for k, v in _json(raw).items() if k != "seed"}
            entry = arms[key] = (a, arm_key(a))
        return entry
    if head is not None:
        entry = arms.get(head)
        if entry is not None:
            return entry
        try:
            a = _loads(head + "}")
        except ValueError:
            pass
        else:
            entry = arms[head] = (a, arm_key(a))
            return entry
    a = {k: v for k, v in _json(raw).items() if k != "seed"}
    return a, arm_key(a)


def _light_params(raw: Any, seed: Any, arms: dict[Any, tuple[dict[str, Any], str]],
                  key: Any = None) -> tuple[dict[str, Any], str]:
    """(a trial's params as stored, its arm key), parsing JSON once per arm where ``_seedless`` can:
    the arm's params plus the seed, in the stored order, when the text ends with the seed; anything
    else parsed whole."""
    head = None if key is not None else _seed_head(raw, seed)
    a, arm = _arm(raw, head, arms, key)
    return ({**a, "seed": seed} if head is not None else _json(raw)), arm


# the scope of a study's trials (optionally some ids): what the metric queries aggregate over
_SCOPE = "SELECT pk FROM trials WHERE study_id = :sid{ids}"
_FINAL = ("SELECT t.trial_id, f.name, f.epoch, f.value FROM trial_finals f JOIN trials t ON t.pk = f.trial_pk "
          "WHERE f.trial_pk IN ({scope}){names}")  # trial_finals: the metric rows at their last epoch (0005)
_BEST = ("SELECT t.trial_id, min(m.epoch), b.v FROM "
         "(SELECT trial_pk, {agg}(value) AS v FROM metrics WHERE trial_pk IN ({scope}) AND name = :metric "
         "GROUP BY trial_pk) b "
         "JOIN metrics m ON m.trial_pk = b.trial_pk AND m.name = :metric AND m.value = b.v "
         "JOIN trials t ON t.pk = b.trial_pk GROUP BY t.trial_id, b.v")
_CHUNK_COLS = ("pk, trial_id, params, seed, status, n_params, flops, error, started_at, ended_at, attempts, "
               "error_kind")
_FULL_COLS = ("pk, trial_id, params, config, seed, status, n_params, flops, error, started_at, ended_at, "
              "provenance, attempts, error_kind, profile")


def _full_record(r: Any) -> TrialRecord:
    """A TrialRecord of a row of ``_FULL_COLS`` (from its trial_id on)."""
    return TrialRecord(r[1], _json(r[2]), _json(r[3]), r[4], r[5], r[6], r[7], r[8], _time(r[9]), _time(r[10]),
                       provenance=dict(_json(r[11]) or {}), attempts=r[12], error_kind=r[13], profile=r[14])


class Reader:
    """The read API of the result database: every method reads one study (or a chunk of trials)
    with a few queries whose size is the answer's, never every per-epoch row when only finals are
    needed; the same SQL on SQLite and PostgreSQL, served by the indexes of db/versions/0004
    and the final values of 0005 (``trial_finals``).

      study_info(study) -> StudyInfo                 name, description, spec (KeyError if none)
      trial_summaries(study, trial_ids=None, *, config=False, light=False) -> list[TrialSummary]
                                                     one row per trial, in insertion order: id, arm,
                                                     params, seed, status, params/FLOPs, error's first
                                                     line, provenance, profile; no metric rows
      table_trials(study, metrics) -> list[TableTrial]  what a table reads of every trial (no config:
                                                     the table asks ``configs`` for its arms')
      light_trials(study) -> list[TableTrial]        what the dashboard reads of every trial: table_trials
                                                     of every metric the study has
      configs(study, trial_ids) -> {trial_id: config}  full configs of some trials (one query)
      final_values(study, metrics=None, trial_ids=None) -> {trial_id: {metric: (epoch, value)}}
                                                     each metric's row at the trial's last epoch
      best_values(study, metric, mode="max", trial_ids=None) -> {trial_id: (epoch, value)}
                                                     the best value and its first epoch
      histories(study, trial_ids, metrics=None) -> {trial_id: {metric: [(epoch, value), ...]}}
                                                     per-epoch rows, only for the trials asked
      last_epochs(study) -> {trial_id: last epoch stored}
      iter_trial_chunks(studies=None, trial_ids=None, *, metrics="all"|"final"|"none",
                        chunk=1000) -> Iterator[(study, [TrialRecord])]   bounded memory
      export_chunks(studies=None, trial_ids=None, *, final=False, chunk=1000)
                        -> Iterator[(study, trial rows, metric rows)]   the same as plain rows, for export
      distinct_params(studies=None, trial_ids=None) -> [params without the seed]   one per arm
      studies(), find_trial(id or prefix), load(study), load_many(), trial_errors(study, ids),
      trial_states(study), results_version(), counts(), attempt_count()

    Epochs are stored as the trainer reports them, from 0; what a person reads counts from 1
    (``display_epoch``). Times come back as aware UTC datetimes on both databases.
    """

    url: str
    display_url: str
    _sql: Any  # _SqliteSQL | _EngineSQL

    def __init__(self, url: str, sql: Any):
        self.url = url
        self.display_url = masked(url)
        self._sql = sql

    def close(self) -> None:
        """Nothing is held between reads (outside ``kept``)."""

    @contextmanager
    def kept(self) -> Iterator[None]:
        """Many reads in a row (a dashboard, an export): on an SQLite file this thread's connection
        is kept between them, each still its own read transaction; elsewhere the engine's pool does it."""
        kept = getattr(self._sql, "kept", None)
        if kept is None:
            yield
            return
        with kept():
            yield

    @property
    def dialect(self) -> str:
        return self._sql.dialect

    # -- schema ----------------------------------------------------------------------------------
    def schema_state(self) -> tuple[set[str], str | None]:
        """(the tables of the database, its alembic revision or None)."""
        with self._sql.snapshot() as q:
            if self.dialect == "sqlite":
                tables = {r[0] for r in q("SELECT name FROM sqlite_master WHERE type = 'table'")}
            else:
                tables = {r[0] for r in q("SELECT table_name FROM information_schema.tables "
                                          "WHERE table_schema = current_schema()")}
            revision = q("SELECT version_num FROM alembic_version")[0][0] if "alembic_version" in tables else None
        return tables, revision

    # -- one study ---------------------------------------------------------------------------------
    def _study_id(self, q: Query, study: str) -> int:
        rows = q("SELECT id FROM studies WHERE name = :name", {"name": study})
        if not rows:
            raise KeyError(study)
        return rows[0][0]

    def studies(self) -> list[tuple[str, str, int]]:
        """(name, description, number of trials) of every study."""
        with self._sql.snapshot() as q:
            return [tuple(r) for r in q("SELECT s.name, s.description, count(t.pk) FROM studies s "  # type: ignore[misc]
                                        "LEFT JOIN trials t ON t.study_id = s.id GROUP BY s.id ORDER BY s.name")]

    def study_info(self, study: str) -> StudyInfo:
        with self._sql.snapshot() as q:
            rows = q("SELECT name, description, spec FROM studies WHERE name = :name", {"name": study})
        if not rows:
            raise KeyError(study)
        name, description, spec = rows[0]
        return StudyInfo(name, description, _json(spec))

    def trial_summaries(self, study: str, trial_ids: Iterable[str] | None = None, *,
                        config: bool = False, light: bool = False) -> list[TrialSummary]:
        """Every trial of ``study`` (or those of ``trial_ids``), without metric rows; ``config=True``
        adds each full config (what a table needs of it is in one trial per arm: see ``configs``).
        ``light=True`` (what a table reads) leaves out the error, times and attempts, and reads of the
        provenance only its code fields (``CODE_FIELDS``), extracted by the database; its summaries
        carry their arm key, computed once per arm."""
        d = self.dialect
        cols = "pk, trial_id, params, seed, status, n_params, flops, error_kind, profile"
        if light:
            # (NULLs: the config's place is the same; SQLite's params are split in Python: ``_seedless``)
            cols += f", {_code_json(d)}, NULL, NULL, {'NULL' if d == 'sqlite' else _arm_text(d)}, NULL"
        else:
            cols += f", provenance, substr(error, 1, {ERROR_HEAD}), attempts, started_at, ended_at"
        if config:
            cols += ", config"
        out: list[TrialSummary] = []
        arms: dict[Any, tuple[dict[str, Any], str]] = {}
        codes: dict[Any, dict[str, Any]] = {}
        with self._sql.snapshot() as q:
            sid = self._study_id(q, study)
            for ids, params in _id_chunks(trial_ids):
                rows = q(f"SELECT {cols} FROM trials WHERE study_id = :sid{ids} ORDER BY pk", {"sid": sid, **params})
                for r in rows:
                    if light:
                        code = codes.get(r[9])  # most trials share their code: one dict built per kind
                        if code is None:
                            code = codes[r[9]] = _code_fields(r[9])
                        p, arm = _light_params(r[2], r[3], arms, r[12])
                        out.append(TrialSummary(study, r[1], p, r[3], r[4], r[5], r[6], None, r[7], 0, None, None,
                                                dict(code), r[8], _json(r[14]) if config else None, _pk=r[0],
                                                _arm=arm))
                        continue
                    out.append(TrialSummary(study, r[1], _json(r[2]), r[3], r[4], r[5], r[6], _first_line(r[10]),
                                            r[7], r[11], _time(r[12]), _time(r[13]), dict(_json(r[9]) or {}), r[8],
                                            _json(r[14]) if config else None, _pk=r[0]))
        if trial_ids is not None:
            out.sort(key=lambda t: t._pk)
        return out

    def table_trials(self, study: str, metrics: Iterable[str]) -> list[TableTrial]:
        """What a study's table reads, in one query, as ``TableTrial``s (at 10^5 trials building the
        records costs more than the SQL, so each is what the table needs and no more): every trial
        in insertion order with its arm (parsed once per arm: ``_seedless`` on SQLite; on PostgreSQL
        the database hands over the params without the seed, which every trial of the arm shares),
        seed, status, params/FLOPs, error kind, the code fields of its provenance (one dict per
        distinct code), profile, and the final value of each of ``metrics``: one correlated subquery
        per metric, a lookup by primary key in ``trial_finals`` (0005), which the writes keep equal
        to the metric row at the last epoch. No per-epoch row, error, time or config (``configs``
        reads the few a table needs)."""
        with paused_gc(), self._sql.snapshot() as q:
            return self._table_trials(q, self._study_id(q, study), list(dict.fromkeys(metrics)))

    def _table_trials(self, q: Query, sid: int, names: list[str]) -> list[TableTrial]:
        d = self.dialect
        cols = (f"trial_id, seed, status, n_params, flops, error_kind, profile, {_code_json(d)}, params, "
                + ("NULL" if d == "sqlite" else _arm_text(d))  # PostgreSQL's arm text is jsonb's (keys
                # reordered): the key of the arm's cache only (``_seedless``), the params parsed once per arm
                + "".join(f", (SELECT value FROM trial_finals WHERE trial_pk = trials.pk AND name = :m{i})"
                          for i in range(len(names))))
        out: list[TableTrial] = []
        arms: dict[Any, tuple[dict[str, Any], str]] = {}
        codes: dict[Any, dict[str, Any]] = {}
        one = names[0] if len(names) == 1 else None
        rows = q(f"SELECT {cols} FROM trials WHERE study_id = :sid ORDER BY pk",
                 {"sid": sid, **{f"m{i}": n for i, n in enumerate(names)}})
        append = out.append
        for r in rows:
            arm = _seedless(r[8], r[1], arms, r[9])
            code = codes.get(r[7])
            if code is None:
                code = codes[r[7]] = _code_fields(r[7])
            if one is not None:
                final = {} if r[10] is None else {one: r[10]}
            else:  # NULL: no such metric stored (most trials have every one: one dict(zip()), no comprehension)
                values = r[10:]
                final = (dict(zip(names, values)) if None not in values else
                         {n: v for n, v in zip(names, values) if v is not None})
            append(TableTrial(r[0], arm[0], arm[1], r[1], r[2], r[3], r[4], r[5], r[6], final, code, {}))
        return out

    def light_trials(self, study: str) -> list[TableTrial]:
        """Every trial of ``study`` in insertion order as the dashboard reads it: ``table_trials`` of
        every metric the study has (in name order), so that the table and the plots read one record
        type (no config, error, times, attempts or per-epoch rows; ``load_details`` reads those for
        the trials shown whole)."""
        with paused_gc(), self._sql.snapshot() as q:
            sid = self._study_id(q, study)
            names = sorted(r[0] for r in q("SELECT DISTINCT name FROM trial_finals WHERE trial_pk IN "
                                           "(SELECT pk FROM trials WHERE study_id = :sid)", {"sid": sid}))
            return self._table_trials(q, sid, names)

    def configs(self, study: str, trial_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The full configs of ``trial_ids`` of ``study``: one query with the ids as one parameter
        (binding 10^4 parameters of an IN list costs more than the lookups: ``_in_list``)."""
        ids = list(dict.fromkeys(trial_ids))
        where, param = _in_list(self.dialect, "trial_id", "ids", ids)
        with self._sql.snapshot() as q:
            sid = self._study_id(q, study)  # KeyError for an unknown study, even without ids
            if not ids:
                return {}
            rows = q(f"SELECT trial_id, config FROM trials WHERE study_id = :sid AND {where}", {"sid": sid, **param})
            return {tid: _json(c) for tid, c in rows}

    def final_values(self, study: str, metrics: Iterable[str] | None = None,
                     trial_ids: Iterable[str] | None = None) -> dict[str, dict[str, tuple[int, float]]]:
        """{trial_id: {metric: (epoch, value)}} at each metric's last stored epoch, read from
        ``trial_finals`` (one row per trial and metric, kept by every write of metrics). Trials
        without metrics are absent."""
        names, nparams = ("", {}) if metrics is None else _in("m", list(metrics))
        out: dict[str, dict[str, tuple[int, float]]] = {}
        with self._sql.snapshot() as q:
            sid = self._study_id(q, study)
            for ids, params in _id_chunks(trial_ids):
                sql = _FINAL.format(scope=_SCOPE.format(ids=ids), names=f" AND name IN {names}" if names else "")
                for tid, name, epoch, value in q(sql, {"sid": sid, **params, **nparams}):
                    out.setdefault(tid, {})[name] = (epoch, value)
        return out

    def best_values(self, study: str, metric: str, mode: str = "max",
                    trial_ids: Iterable[str] | None = None) -> dict[str, tuple[int, float]]:
        """{trial_id: (epoch, value)}: each trial's best ``metric`` (``mode`` max or min) and the
        first epoch that reached it, by an aggregate query."""
        if mode not in ("max", "min"):
            raise ValueError(f"mode: max or min, got {mode!r}")
        out: dict[str, tuple[int, float]] = {}
        with self._sql.snapshot() as q:
            sid = self._study_id(q, study)
            for ids, params in _id_chunks(trial_ids):
                sql = _BEST.format(agg=mode, scope=_SCOPE.format(ids=ids))
                for tid, epoch, value in q(sql, {"sid": sid, "metric": metric, **params}):
                    out[tid] = (epoch, value)
        return out

    def histories(self, study: str, trial_ids: Iterable[str],
                  metrics: Iterable[str] | None = None) -> dict[str, dict[str, list[tuple[int, float]]]]:
        """{trial_id: {metric: [(epoch, value), ...]}} in epoch order, for ``trial_ids`` only."""
        names, nparams = ("", {}) if metrics is None else _in("m", list(metrics))
        out: dict[str, dict[str, list[tuple[int, float]]]] = {}
        with self._sql.snapshot() as q:
            sid = self._study_id(q, study)
            for ids, params in _id_chunks(list(trial_ids)):
                sql = (f"SELECT t.trial_id, m.name, m.epoch, m.value FROM metrics m JOIN trials t ON t.pk = m.trial_pk "
                       f"WHERE t.study_id = :sid{ids.replace('trial_id', 't.trial_id')}"
                       + (f" AND m.name IN {names}" if names else "") + " ORDER BY m.trial_pk, m.name, m.epoch")
                for tid, name, epoch, value in q(sql, {"sid": sid, **params, **nparams}):
                    out.setdefault(tid, {}).setdefault(name, []).append((epoch, value))
        return out

    def last_epochs(self, study: str) -> dict[str, int]:
        """{trial_id: the last epoch with a stored metric} (trials without metrics are absent): the
        largest of its metrics' last epochs, so read from ``trial_finals`` (a few rows per trial)."""
        with self._sql.snapshot() as q:
            sid = self._study_id(q, study)
            return dict(q("SELECT t.trial_id, max(f.epoch) FROM trial_finals f JOIN trials t ON t.pk = f.trial_pk "
                          "WHERE t.study_id = :sid GROUP BY t.trial_id", {"sid": sid}))

    def trial_errors(self, study: str, trial_ids: Iterable[str]) -> dict[str, str]:
        """{trial_id: full stored error} of ``trial_ids`` of ``study`` that have one (the dashboard's
        trial details; ``trial_summaries`` carries only the first line)."""
        return self._errors(study, list(trial_ids))

    def _errors(self, study: str, trial_ids: Iterable[str] | None = None) -> dict[str, str]:
        out: dict[str, str] = {}
        with self._sql.snapshot() as q:
            sid = self._study_id(q, study)
            for ids, params in _id_chunks(trial_ids):
                out.update(q(f"SELECT trial_id, error FROM trials WHERE study_id = :sid AND error IS NOT NULL{ids}",
                             {"sid": sid, **params}))
        return out

    def trial_states(self, study: str) -> dict[str, TrialState]:
        """Status and holder of every trial of ``study``."""
        with self._sql.snapshot() as q:
            rows = q("SELECT t.trial_id, t.status, t.claimed_by, t.lease_until, t.ended_at FROM trials t "
                     "JOIN studies s ON s.id = t.study_id WHERE s.name = :name", {"name": study})
        return {tid: TrialState(st, by, _time(until), _time(ended)) for tid, st, by, until, ended in rows}

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

    # -- one trial -------------------------------------------------------------------------------
    def find_trial(self, trial_id: str) -> tuple[str, TrialRecord]:
        """(study name, the trial with every epoch and its replaced attempts) for a trial id or a
        unique prefix of one. KeyError if none matches, ValueError if several do."""
        like = trial_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._sql.snapshot() as q:
            rows = q(f"SELECT {', '.join('t.' + c for c in _FULL_COLS.split(', '))}, s.name FROM trials t "
                     "JOIN studies s ON s.id = t.study_id WHERE t.trial_id LIKE :like ESCAPE '\\' LIMIT 11",
                     {"like": like})
            exact = [r for r in rows if r[1] == trial_id]
            rows = exact or rows
            if not rows:
                raise KeyError(f"no trial '{trial_id}' in {self.display_url}")
            if len(rows) > 1:
                found = ", ".join(f"{r[1]} ({r[-1]})" for r in rows[:10])
                raise ValueError(f"'{trial_id}' matches several trials in {self.display_url}: {found}")
            row = rows[0]
            rec = _full_record(row)
            for epoch, metric, value in q("SELECT epoch, name, value FROM metrics WHERE trial_pk = :pk "
                                          "ORDER BY epoch, name", {"pk": row[0]}):
                rec.final[metric] = value
                rec.history.setdefault(metric, []).append((epoch, value))
            for a in q("SELECT attempt, status, error, error_kind, provenance, started_at, ended_at, metrics, "
                       "archived_at FROM trial_attempts WHERE trial_pk = :pk ORDER BY attempt, pk", {"pk": row[0]}):
                rec.past_attempts.append({"attempt": a[0], "status": a[1], "error": a[2], "error_kind": a[3],
                                          "provenance": _json(a[4]) or {}, "started_at": _time(a[5]),
                                          "ended_at": _time(a[6]), "metrics": _json(a[7]),
                                          "archived_at": _time(a[8])})
        return row[-1], rec

    # -- many studies (export, dashboard) ----------------------------------------------------------
    def iter_trial_chunks(self, studies: Iterable[str] | None = None, trial_ids: Iterable[str] | None = None, *,
                          metrics: str = "all", chunk: int = 1000) -> Iterator[tuple[str, list[TrialRecord]]]:
        """(study, up to ``chunk`` trials) at a time, each trial with its metrics: ``all`` epochs
        (``history`` and ``final``), only the ``final`` ones, or ``none``; configs are left out.
        Memory stays bounded by the chunk however large the database (keyset pagination on the
        trial's key, one metric query per chunk over that key range). Unknown study names raise
        KeyError."""
        if metrics not in ("all", "final", "none"):
            raise ValueError(f"metrics: all, final or none, got {metrics!r}")
        ids = None if trial_ids is None else sorted(set(trial_ids))
        # params parsed once per arm of a chunk (``_light_params``; on SQLite split in Python)
        split = "NULL" if self.dialect == "sqlite" else _arm_text(self.dialect)
        found = self._studies_named(studies)
        for sid, name in found:
            for where, params in _id_chunks(ids):
                last = -1
                while True:
                    with self._sql.snapshot() as q:
                        rows = q(f"SELECT {_CHUNK_COLS}, {split} FROM trials WHERE study_id = :sid AND pk > :last"
                                 f"{where} ORDER BY pk LIMIT :chunk", {"sid": sid, "last": last, "chunk": chunk, **params})
                        if not rows:
                            break
                        arms: dict[Any, Any] = {}  # per chunk: memory stays bounded by the chunk
                        by_pk = {r[0]: TrialRecord(r[1], _light_params(r[2], r[3], arms, r[12])[0], {}, r[3], r[4],
                                                   r[5], r[6], r[7], _time(r[8]), _time(r[9]), attempts=r[10],
                                                   error_kind=r[11]) for r in rows}
                        scope = (f"SELECT pk FROM trials WHERE study_id = :sid AND pk > :last AND pk <= :hi{where}")
                        span = {"sid": sid, "last": last, "hi": rows[-1][0], **params}
                        last = rows[-1][0]
                        if metrics == "all":
                            for pk, metric, epoch, value in q(
                                    f"SELECT trial_pk, name, epoch, value FROM metrics WHERE trial_pk IN ({scope}) "
                                    "ORDER BY trial_pk, name, epoch", span):
                                rec = by_pk[pk]
                                rec.history.setdefault(metric, []).append((epoch, value))
                                rec.final[metric] = value
                        elif metrics == "final":
                            sql = f"SELECT trial_pk, name, epoch, value FROM trial_finals WHERE trial_pk IN ({scope})"
                            for pk, metric, epoch, value in q(sql, span):
                                rec = by_pk[pk]
                                rec.history[metric] = [(epoch, value)]
                                rec.final[metric] = value
                    yield name, list(by_pk.values())
                    if len(rows) < chunk:
                        break

    def _studies_named(self, studies: Iterable[str] | None) -> list[tuple[int, str]]:
        """(id, name) of ``studies`` in the order given (all, by name, when None); KeyError for the
        first name the database does not hold."""
        with self._sql.snapshot() as q:
            found = [(sid, name) for sid, name in q("SELECT id, name FROM studies ORDER BY name")]
        if studies is None:
            return found
        known = {name: sid for sid, name in found}
        wanted = list(dict.fromkeys(studies))
        missing = [n for n in wanted if n not in known]
        if missing:
            raise KeyError(missing[0])
        return [(known[n], n) for n in wanted]

    def distinct_params(self, studies: Iterable[str] | None = None,
                        trial_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Each distinct set of axis values (the params without the seed) of the trials of
        ``studies`` (all when None), optionally only ``trial_ids``: what an export's columns and
        their types are made of, in one query that parses one JSON text per arm instead of one per
        trial (on SQLite the database removes the seed; elsewhere the params' text is parsed per
        distinct text). KeyError for a study the database does not hold."""
        sids = [sid for sid, _ in self._studies_named(studies)]
        ids = None if trial_ids is None else sorted(set(trial_ids))
        col = _arm_text(self.dialect) if self.dialect == "sqlite" else "CAST(params AS text)"
        texts: set[Any] = set()
        with self._sql.snapshot() as q:
            where, param = _in_list(self.dialect, "study_id", "sids", sids)
            for id_sql, params in _id_chunks(ids):
                texts.update(r[0] for r in q(f"SELECT DISTINCT {col} FROM trials WHERE {where}{id_sql}",
                                             {**param, **params}))
        out = []
        for text in texts:
            p = _json(text)
            out.append({k: v for k, v in p.items() if k != "seed"})
        return out

    def export_chunks(self, studies: Iterable[str] | None = None, trial_ids: Iterable[str] | None = None, *,
                      final: bool = False, chunk: int = 1000) -> Iterator[tuple[str, list[tuple], list[tuple]]]:
        """What ``ablate export`` writes, ``chunk`` trials at a time as plain rows (no records: at
        10^4 trials the export's Python objects cost more than its SQL): (study, trials, points) with
        trials (pk, trial_id, params without the seed (shared by the trials of an arm: read-only), seed,
        status, n_params, flops, error, started_at, ended_at; the times as the database hands them
        over: SQLite's text, which ``export`` mostly copies, or a datetime) in
        insertion order and points (trial pk, epoch, metric, value) ordered by trial, metric and
        epoch, every epoch or (``final``) only each metric's last, and (pk, None, None, None) for a
        trial without metric rows. Keyset pagination on the trial's key, as ``iter_trial_chunks``:
        memory is the chunk's. KeyError for a study the database does not hold."""
        found = self._studies_named(studies)
        ids = None if trial_ids is None else sorted(set(trial_ids))
        split = "NULL" if self.dialect == "sqlite" else _arm_text(self.dialect)  # ``_seedless``: one parse per arm
        source = ("LEFT JOIN trial_finals m ON m.trial_pk = t.pk" if final else
                  "LEFT JOIN metrics m ON m.trial_pk = t.pk")
        for sid, name in found:
            for where, params in _id_chunks(ids):
                last = -1
                while True:
                    with self._sql.snapshot() as q:
                        rows = q("SELECT pk, trial_id, params, seed, status, n_params, flops, error, started_at, "
                                 f"ended_at, {split} FROM trials WHERE study_id = :sid AND pk > :last{where} "
                                 "ORDER BY pk LIMIT :chunk", {"sid": sid, "last": last, "chunk": chunk, **params})
                        if not rows:
                            break
                        span = {"sid": sid, "last": last, "hi": rows[-1][0], **params}
                        last = rows[-1][0]
                        points = q(f"SELECT t.pk, m.epoch, m.name, m.value FROM trials t {source} "
                                   f"WHERE t.study_id = :sid AND t.pk > :last AND t.pk <= :hi"
                                   f"{where.replace('trial_id', 't.trial_id')} ORDER BY t.pk, m.name, m.epoch", span)
                    arms: dict[Any, Any] = {}  # per chunk: memory stays bounded by the chunk
                    trials = [(r[0], r[1], _seedless(r[2], r[3], arms, r[10])[0], r[3], r[4], r[5], r[6], r[7],
                               r[8], r[9]) for r in rows]
                    yield name, trials, points
                    if len(rows) < chunk:
                        break

    def load_many(self, names: Iterable[str] | None = None, *, history: bool = False) -> list[StudyRecord]:
        """Several studies (all when ``names`` is None) whole, every metric row read (``history``
        keeps them per epoch): what tests compare the aggregate reads with."""
        wanted = None if names is None else list(names)
        with self._sql.snapshot() as q:
            sql, params = "SELECT id, name, description, spec FROM studies", {}
            if wanted is not None:
                if not wanted:
                    return []
                names_in, params = _in("n", wanted)
                sql += f" WHERE name IN {names_in}"
            studies = {sid: StudyRecord(name, desc, _json(spec), [])
                       for sid, name, desc, spec in q(sql + " ORDER BY name", params)}
            if not studies:
                return []
            sids, sparams = _in("s", list(studies))
            by_pk: dict[int, TrialRecord] = {}
            for r in q(f"SELECT {_FULL_COLS}, study_id FROM trials WHERE study_id IN {sids} ORDER BY pk", sparams):
                rec = _full_record(r)
                rec.profile = None  # as the bulk read always gave it
                by_pk[r[0]] = rec
                studies[r[-1]].trials.append(rec)
            for pk, epoch, metric, value in q(
                    "SELECT m.trial_pk, m.epoch, m.name, m.value FROM metrics m JOIN trials t ON t.pk = m.trial_pk "
                    f"WHERE t.study_id IN {sids} ORDER BY m.epoch", sparams):
                rec = by_pk[pk]
                rec.final[metric] = value  # ordered by epoch: the last one wins
                if history:
                    rec.history.setdefault(metric, []).append((epoch, value))
        return list(studies.values())

    # -- the database as a whole -------------------------------------------------------------------
    def results_version(self) -> str:
        """A fingerprint of everything a results view shows, from a few aggregates that indexes
        or primary keys answer: it changes when a study is added or updated, a trial is added,
        starts, ends, changes status or is rerun, or a metric row is written (``add_metrics``
        deletes and inserts, so the largest metric id grows) or a final value changes (the final
        rows' count, sum and epochs: a rewrite of the newest rows, which SQLite may give the same
        ids, e.g. an analysis rerun). Equal fingerprints: nothing to redo."""
        with self._sql.snapshot() as q:
            studies = q("SELECT count(id), max(updated_at) FROM studies")[0]
            trials = q("SELECT count(pk), max(started_at), max(ended_at), sum(attempts) FROM trials")[0]
            status = sorted(tuple(r) for r in q("SELECT status, count(*) FROM trials GROUP BY status"))
            metrics = q("SELECT max(id) FROM metrics")[0][0]
            finals = q("SELECT count(trial_pk), sum(value), sum(epoch) FROM trial_finals")[0]
            attempts = q("SELECT count(pk) FROM trial_attempts")[0][0]
        return repr((tuple(studies), tuple(trials), status, metrics, tuple(finals), attempts))

    def study_versions(self, metric_ids: dict[str, int] | None = None,
                       after: int = 0) -> tuple[dict[str, str], dict[str, int], int]:
        """``results_version`` per study: (name -> fingerprint, name -> its largest metric id, the largest
        metric id of all). It changes when that study's spec is updated, a trial of it is added, starts,
        ends, changes status or is rerun, or a metric row or final value of it is written (an analysis
        too). ``metric_ids`` and ``after``: what an earlier call returned; then only the metric rows
        written since are read (a range of the primary key), not every row (~0.08 s at 300,000)."""
        with self._sql.snapshot() as q:
            parts: dict[Any, list[Any]] = {sid: [name, str(updated)] for sid, name, updated in
                                           q("SELECT id, name, updated_at FROM studies")}
            for sid, *agg in q("SELECT study_id, count(pk), max(started_at), max(ended_at), sum(attempts) "
                               "FROM trials GROUP BY study_id"):
                parts[sid].append(tuple(str(a) for a in agg))
            for sid, status, n in q("SELECT study_id, status, count(pk) FROM trials GROUP BY study_id, status "
                                    "ORDER BY study_id, status"):
                parts[sid].append((status, n))
            for sid, *agg in q("SELECT t.study_id, count(f.trial_pk), sum(f.value), sum(f.epoch) FROM trial_finals f "
                               "JOIN trials t ON t.pk = f.trial_pk GROUP BY t.study_id"):
                parts[sid].append(("finals", *agg))
            for sid, n in q("SELECT t.study_id, count(a.pk) FROM trial_attempts a JOIN trials t ON t.pk = a.trial_pk "
                            "GROUP BY t.study_id"):
                parts[sid].append(("attempts", n))
            top = q("SELECT max(id) FROM metrics")[0][0] or 0
            names = {sid: p[0] for sid, p in parts.items()}
            if metric_ids is None or top < after:  # no earlier read, or rows deleted past it: read them all
                after, ids = 0, {}
            else:  # the studies still there
                held = set(names.values())
                ids = {n: i for n, i in metric_ids.items() if n in held}
            # rows rewritten in place may keep their ids (SQLite reuses the largest): the final rows' sums tell
            for sid, last in q("SELECT t.study_id, max(m.id) FROM metrics m JOIN trials t ON t.pk = m.trial_pk "
                               "WHERE m.id > :after AND m.id <= :top GROUP BY t.study_id", {"after": after, "top": top}):
                ids[names[sid]] = last
        return {p[0]: repr((*p[1:], ("metric", ids.get(p[0])))) for p in parts.values()}, ids, top

    def counts(self) -> dict[str, int]:
        """Row counts of the result tables (for tests and `ablate db`); replaced attempts are
        counted by ``attempt_count``."""
        with self._sql.snapshot() as q:
            return {t: q(f"SELECT count(*) FROM {t}")[0][0] or 0 for t in ("studies", "trials", "metrics")}

    def attempt_count(self) -> int:
        with self._sql.snapshot() as q:
            return q("SELECT count(*) FROM trial_attempts")[0][0] or 0


def open_reader(url: str | None = None) -> Reader:
    """Read-only access to the result database at ``url`` (default ``ABLATE_DB``, else ./ablate.db):
    what every command that only reads opens. Never creates a file, folder or schema. An SQLite file
    at the schema's head revision is read with ``sqlite3`` (no SQLAlchemy imported); any other
    database, or an SQLite file of an older revision, is opened as ``Store(url, create=False)``.
    Every problem with the database is a ``DatabaseError`` with one line naming the masked URL."""
    url = normalize_url(url or default_db_url())
    path = sqlite_file(url)
    if path is None:
        from ablate.store import Store

        return Store(url, create=False)
    display = masked(url)
    if not path.parent.is_dir():
        raise DatabaseError(f"database {display}: folder {path.parent} does not exist "
                            "(ablate creates the database file, not folders)")
    if path.is_dir():
        raise DatabaseError(f"database {display}: {path} is a folder, not a file")
    if not path.is_file():
        raise DatabaseError(f"database {display}: no such file (run a study with `ablate run` to create it)")
    reader = Reader(url, _SqliteSQL(path, url))
    tables, revision = reader.schema_state()
    if check_schema(display, tables, revision, create=False):  # an older schema: Store migrates it, as before
        from ablate.store import Store

        return Store(url, create=False)
    return reader
