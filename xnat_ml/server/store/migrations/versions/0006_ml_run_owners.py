"""Who owns each ML_RUNS/<run>/ folder: the user whose credentials first wrote into it.

- ml_run_owners: one row per run folder of an ML_RUNS resource (server/store/ml_assets.py),
  deleted with the run folder or the resource.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 22:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ml_run_owners",
        sa.Column("resource_pk", sa.Integer(), nullable=False),
        sa.Column("run", sa.String(length=255), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["resource_pk"], ["resources.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("resource_pk", "run"),
    )


def downgrade() -> None:
    op.drop_table("ml_run_owners")
