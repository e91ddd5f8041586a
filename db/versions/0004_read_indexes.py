"""Indexes for reads that ask SQL for what they need (ablate.store's read API, issue 13).

* metrics (trial_pk, name, epoch, value): a trial's last (or best) epoch of a metric is found
  inside the index, without reading the table; it covers every metric read (final values, best
  values, one trial's history), so the old single-column index on trial_pk, a prefix of it, goes.
* trials (study_id, status): a study's trials by status (tables, progress counts) without a scan.
* trials.profile: the profile of the study file that registered the trial (NULL for trials
  registered before), so that a table of one profile leaves out another profile's trials of the
  same arms.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("trials", sa.Column("profile", sa.String(100), nullable=True))
    op.create_index("ix_metrics_trial_name_epoch", "metrics", ["trial_pk", "name", "epoch", "value"])
    op.drop_index("ix_metrics_trial_pk", table_name="metrics")
    op.create_index("ix_trials_study_status", "trials", ["study_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_trials_study_status", table_name="trials")
    op.create_index("ix_metrics_trial_pk", "metrics", ["trial_pk"])
    op.drop_index("ix_metrics_trial_name_epoch", table_name="metrics")
    with op.batch_alter_table("trials") as b:
        b.drop_column("profile")
