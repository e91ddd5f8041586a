"""Claims with a lease, provenance, error kind, the interrupted status, replaced attempts.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OLD_INTERRUPTED = "interrupted: the driver stopped"


def upgrade() -> None:
    op.add_column("trials", sa.Column("provenance", sa.JSON(), nullable=True))
    op.add_column("trials", sa.Column("error_kind", sa.String(16), nullable=True))
    op.add_column("trials", sa.Column("claimed_by", sa.String(200), nullable=True))
    op.add_column("trials", sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_trials_claimed_by", "trials", ["claimed_by"])
    # interrupted is a status of its own now (it was stored as failed with this error)
    op.execute(sa.text("UPDATE trials SET status = 'interrupted', error_kind = 'transient' "
                       "WHERE status = 'failed' AND error = :e").bindparams(e=OLD_INTERRUPTED))
    op.create_table(
        "trial_attempts",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("trial_pk", sa.Integer(), sa.ForeignKey("trials.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.String(16), nullable=True),
        sa.Column("provenance", sa.JSON(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_trial_attempts_trial_pk_attempt", "trial_attempts", ["trial_pk", "attempt"])


def downgrade() -> None:
    op.drop_table("trial_attempts")
    op.execute(sa.text("UPDATE trials SET status = 'failed' WHERE status = 'interrupted'"))
    with op.batch_alter_table("trials") as b:
        b.drop_index("ix_trials_claimed_by")
        for c in ("lease_until", "claimed_by", "error_kind", "provenance"):
            b.drop_column(c)
