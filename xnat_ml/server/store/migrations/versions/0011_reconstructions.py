"""Reconstructions of image sessions (xnat:reconstructedImageData).

- reconstructions: one row per reconstruction of a session (ID unique in the session).
- resources.reconstruction_pk: a resource may belong to a reconstruction. Adding a foreign key
  rebuilds the table in SQLite; it keeps AUTOINCREMENT (see 0002).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 02:07:35.300089
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconstructions",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("experiment_pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("base_scan_type", sa.String(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("last_modified", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["experiment_pk"], ["experiments.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("experiment_pk", "id"),
    )
    with op.batch_alter_table(
        "resources", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.add_column(sa.Column("reconstruction_pk", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_resources_reconstruction_pk"), ["reconstruction_pk"], unique=False
        )
        batch_op.create_foreign_key(
            "fk_resources_reconstruction_pk",
            "reconstructions",
            ["reconstruction_pk"],
            ["pk"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    """Back to 0010 (tests replay older data folders; keep a copy of real ones): the
    reconstructions' resources (their file rows first) and the reconstructions go, then the
    column. Their files stay on disk."""
    held = "SELECT pk FROM resources WHERE reconstruction_pk IS NOT NULL"
    op.execute(f"DELETE FROM resource_files WHERE resource_pk IN ({held})")
    op.execute(f"DELETE FROM ml_run_owners WHERE resource_pk IN ({held})")
    op.execute("DELETE FROM resources WHERE reconstruction_pk IS NOT NULL")
    with op.batch_alter_table(
        "resources", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_constraint("fk_resources_reconstruction_pk", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_resources_reconstruction_pk"))
        batch_op.drop_column("reconstruction_pk")
    op.drop_table("reconstructions")
