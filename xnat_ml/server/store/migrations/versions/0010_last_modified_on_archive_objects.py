"""XNAT's last_modified on archive objects.

- projects, subjects, experiments, scans, assessors: `last_modified`, set on every change of the
  row; rows made before this revision start with their creation time.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 01:57:23.445782
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = ("assessors", "experiments", "projects", "scans", "subjects")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("last_modified", sa.DateTime(), nullable=True))
        op.execute(f"UPDATE {table} SET last_modified = created")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("last_modified")
