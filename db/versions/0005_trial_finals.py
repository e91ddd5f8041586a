"""Each trial's final metric values in a table of their own (issue 13).

``trial_finals`` (trial_pk, name) -> (epoch, value): the metric row at the trial's last epoch of that
metric. A table at 10^5 trials read it by looking for the last epoch among every epoch's rows, one
index seek per trial and metric; now it reads one row per trial and metric by primary key. The
store writes it in the same transaction as every metric row it writes or deletes
(``add_metrics``, ``add_analysis``, ``rerun``, ``import_records``), and a trial's deletion
cascades. On SQLite the table is WITHOUT ROWID: its rows live in the primary key's b-tree.

The upgrade backfills it from the metric rows by the same aggregate that ``final_values`` ran.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trial_finals",
        sa.Column("trial_pk", sa.Integer(), sa.ForeignKey("trials.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("trial_pk", "name"),
        sqlite_with_rowid=False,
    )
    op.execute("INSERT INTO trial_finals (trial_pk, name, epoch, value) "
               "SELECT m.trial_pk, m.name, m.epoch, m.value FROM metrics m JOIN "
               "(SELECT trial_pk, name, max(epoch) AS e FROM metrics GROUP BY trial_pk, name) f "
               "ON m.trial_pk = f.trial_pk AND m.name = f.name AND m.epoch = f.e")


def downgrade() -> None:
    op.drop_table("trial_finals")
