"""A database as an earlier ablate left it, for the migration tests: the schema at an alembic
revision, one study ``s`` and the trial and metric rows a test gives, written through the tables
reflected from that schema (the current models would not match it)."""

from __future__ import annotations

from typing import Any, Iterable

import sqlalchemy as sa
from alembic import command

from ablate.store import _alembic_config, make_engine


def old_database(url: str, revision: str, trials: Iterable[dict[str, Any]],
                 metrics: Iterable[dict[str, Any]]) -> None:
    """Create the schema of ``revision`` at ``url`` and fill it: study ``s`` (id 1), then ``trials``
    and ``metrics`` as rows of their tables (column names as at that revision)."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), revision)
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO studies (id, name, description, spec, created_at, updated_at) "
                                 "VALUES (1, 's', '', '{}', '2026-01-01', '2026-01-01')"))
            meta = sa.MetaData()
            trial_table = sa.Table("trials", meta, autoload_with=conn)
            metric_table = sa.Table("metrics", meta, autoload_with=conn)
            for row in trials:
                conn.execute(trial_table.insert().values(**row))
            for row in metrics:
                conn.execute(metric_table.insert().values(**row))
    finally:
        engine.dispose()
