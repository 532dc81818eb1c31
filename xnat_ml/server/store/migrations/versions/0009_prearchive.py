"""The prearchive: DICOM uploads waiting to be archived.

- prearchive_sessions: one row per upload held in DATA/prearchive/<pk>.upload, with its
  (project, timestamp, folderName) triple and what its headers say (server/store/prearchive.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 03:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prearchive_sessions",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("project_pk", sa.Integer(), nullable=False),
        sa.Column("timestamp", sa.String(length=32), nullable=False),
        sa.Column("folder_name", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("scan_date", sa.String(length=10), nullable=False),
        sa.Column("scan_time", sa.String(length=16), nullable=False),
        sa.Column("uploader", sa.String(length=255), nullable=False),
        sa.Column("uploaded", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["project_pk"], ["projects.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("project_pk", "timestamp", "folder_name"),
    )


def downgrade() -> None:
    op.drop_table("prearchive_sessions")
