"""Saved searches: one row per `/data/search/saved/{id}` document.

- saved_searches: the document as sent, its owner (deleted with the user), its root datatype
  and the logins it is shared with (server/store/saved_searches.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 02:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "saved_searches",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("owner_pk", sa.Integer(), nullable=False),
        sa.Column("brief_description", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("root_element", sa.String(length=64), nullable=False),
        sa.Column("allowed_users", sa.JSON(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["owner_pk"], ["users.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_saved_searches_owner_pk", "saved_searches", ["owner_pk"])


def downgrade() -> None:
    op.drop_index("ix_saved_searches_owner_pk", table_name="saved_searches")
    op.drop_table("saved_searches")
