"""shared rate-limit buckets and upload slots

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(length=96), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "upload_slots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("upload_slots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_upload_slots_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("upload_slots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_upload_slots_user_id"))
    op.drop_table("upload_slots")
    op.drop_table("rate_buckets")
