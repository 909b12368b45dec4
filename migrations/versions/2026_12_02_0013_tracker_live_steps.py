"""tracker_runs gains live_attempt and live_steps: the training steps of an iteration whose train phase is
still running are sent to the trackers as they are written (a live curve), and these say how many of which
attempt of that phase were sent, so that the rest follow without a repeat and a re-run's steps follow on the
global step axis.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tracker_runs") as batch:
        batch.add_column(sa.Column("live_attempt", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("live_steps", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("tracker_runs") as batch:
        batch.drop_column("live_steps")
        batch.drop_column("live_attempt")
