"""human evaluation: blind answer pairs and maintainers' grades

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import quantgrid.hub.server.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "human_eval_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("benchmark", sa.String(length=64), nullable=False),
        sa.Column("question_id", sa.String(length=64), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("context", sa.Text(), nullable=True),
        sa.Column("base_answer", sa.Text(), nullable=False),
        sa.Column("candidate_answer", sa.Text(), nullable=False),
        sa.Column("candidate_first", sa.Boolean(), nullable=False),
        sa.Column("created_at", quantgrid.hub.server.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("target_kind", "target", "question_id", name="uq_human_eval_item"),
    )
    op.create_table(
        "human_eval_grades",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("created_at", quantgrid.hub.server.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["human_eval_items.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id", "user_id"),
    )
    with op.batch_alter_table("human_eval_grades", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_human_eval_grades_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("human_eval_grades", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_human_eval_grades_user_id"))
    op.drop_table("human_eval_grades")
    op.drop_table("human_eval_items")
