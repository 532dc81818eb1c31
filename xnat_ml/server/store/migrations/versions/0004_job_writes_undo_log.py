"""The undo log of job writes: what a job wrote with its token, until the job ends.

- job_writes: one row per archive change made with a job's alias token (server/job_writes.py),
  dropped when the job completes, undone when it fails.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 02:12:11.314818
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_writes",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("table_name", sa.String(length=32), nullable=False),
        sa.Column("row_pk", sa.Integer(), nullable=False),
        sa.Column("row", sa.JSON(), nullable=False),
        sa.Column("kept", sa.String(length=2048), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("job_writes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_writes_job_id"), ["job_id"], unique=False)



def downgrade() -> None:
    with op.batch_alter_table("job_writes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_writes_job_id"))

    op.drop_table("job_writes")
