"""writer_leases.lock_key: the second key of a loop's PostgreSQL advisory lock, when it is not the one
derived from the loop's name. A writer that finds the loop's key held by a role that is not a writer (a
reader can call pg_advisory_lock) takes a fresh random key instead and records it here, under the lease
row's lock, so a reader can never keep a writer out.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("writer_leases") as batch:
        batch.add_column(sa.Column("lock_key", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("writer_leases") as batch:
        batch.drop_column("lock_key")
