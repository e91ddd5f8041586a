"""Trial ids hash only what changes a trial's numbers (ablate.expand.identity): speed-only settings
such as recipe.workers, and the retired recipe.resolution, no longer count. Every stored trial gets
the id its config has now, so existing databases keep their trials. Two rows of one study that now
share an id (they differed only in a speed-only setting) become one trial: the completed row (or
else the newest) stays, the other is kept whole in trial_attempts, nothing is deleted.

Revision ID: 0003
Revises: 0002
"""
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_RANK = {"completed": 3, "running": 2, "interrupted": 1, "failed": 1, "pending": 0}


def upgrade() -> None:
    from ablate.expand import trial_id  # the id function of this version of ablate

    conn = op.get_bind()
    meta = sa.MetaData()
    trials = sa.Table("trials", meta, autoload_with=conn)
    metrics = sa.Table("metrics", meta, autoload_with=conn)
    attempts = sa.Table("trial_attempts", meta, autoload_with=conn)
    rows = conn.execute(sa.select(trials.c.pk, trials.c.study_id, trials.c.trial_id, trials.c.config,
                                  trials.c.status, trials.c.attempts, trials.c.error, trials.c.error_kind,
                                  trials.c.provenance, trials.c.started_at, trials.c.ended_at)
                        .order_by(trials.c.pk)).all()
    groups: dict[tuple[int, str], list] = {}
    for r in rows:
        groups.setdefault((r.study_id, trial_id(r.config)), []).append(r)
    for (_, new_id), group in groups.items():
        keep = max(group, key=lambda r: (_RANK.get(r.status, 0), r.pk))
        for r in group:
            if r.pk == keep.pk:
                continue
            hist: dict[str, list] = {}
            for e, n, v in conn.execute(sa.select(metrics.c.epoch, metrics.c.name, metrics.c.value)
                                        .where(metrics.c.trial_pk == r.pk).order_by(metrics.c.epoch)):
                hist.setdefault(n, []).append([e, v])
            conn.execute(attempts.insert().values(
                trial_pk=keep.pk, attempt=r.attempts, status=r.status, error=r.error, error_kind=r.error_kind,
                provenance={**(r.provenance or {}), "merged_from_trial_id": r.trial_id}, started_at=r.started_at,
                ended_at=r.ended_at, metrics=hist, archived_at=datetime.now(timezone.utc)))
            conn.execute(metrics.delete().where(metrics.c.trial_pk == r.pk))
            conn.execute(trials.delete().where(trials.c.pk == r.pk))
        if keep.trial_id != new_id:
            conn.execute(trials.update().where(trials.c.pk == keep.pk).values(trial_id=new_id))


def downgrade() -> None:
    pass  # old ids cannot be recomputed without the old hash; the rows stay as they are
