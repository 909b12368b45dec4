"""prompts.messages: a task given as a conversation (TRL's conversational forms) keeps its system turn and earlier
turns with the prompt; `text` stays the user turn the policy answers.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("prompts", sa.Column("messages", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True))


def downgrade() -> None:
    # SQLite drops the column in place (3.35+): a batch table copy would trip over the views on prompts.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE prompts DROP COLUMN messages")
    else:
        op.drop_column("prompts", "messages")
