"""Sharing: subjects and experiments shared into other projects.

- shares: one row per (project, subject) or (project, experiment) share with the label it has
  there; deleted with the project, the subject or the experiment (server/store/shares.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 02:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shares",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("project_pk", sa.Integer(), nullable=False),
        sa.Column("subject_pk", sa.Integer(), nullable=True),
        sa.Column("experiment_pk", sa.Integer(), nullable=True),
        sa.Column("label", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["project_pk"], ["projects.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["subject_pk"], ["subjects.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["experiment_pk"], ["experiments.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("project_pk", "subject_pk"),
        sa.UniqueConstraint("project_pk", "experiment_pk"),
    )
    op.create_index("ix_shares_subject_pk", "shares", ["subject_pk"])
    op.create_index("ix_shares_experiment_pk", "shares", ["experiment_pk"])


def downgrade() -> None:
    op.drop_index("ix_shares_experiment_pk", table_name="shares")
    op.drop_index("ix_shares_subject_pk", table_name="shares")
    op.drop_table("shares")
