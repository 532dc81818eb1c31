"""Workflows for jobs: XNAT's wrk:workflowData entry each launch opens, named by its job.

- wrk_workflowdata: one row per launch (pipeline = wrapper, status mirrored from the job, step
  and percentage as the job reports them); kept after the job, deleted with the project.
- cs_containers.workflow_id: the job's workflow.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 01:50:44.290211
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wrk_workflowdata",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("object_id", sa.String(length=64), nullable=False),
        sa.Column("scan_id", sa.String(length=64), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("data_type", sa.String(length=64), nullable=False),
        sa.Column("pipeline_name", sa.String(length=255), nullable=False),
        sa.Column("launch_time", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("step_description", sa.Text(), nullable=False),
        sa.Column("percentage_complete", sa.String(length=16), nullable=False),
        sa.Column("current_step_id", sa.String(length=64), nullable=False),
        sa.Column("current_step_launch_time", sa.DateTime(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("comments", sa.Text(), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("create_user", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("wrk_workflowdata", schema=None) as batch_op:
        batch_op.create_index("ix_wrk_workflowdata_object", ["object_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_wrk_workflowdata_project"), ["project"], unique=False)

    # Rebuilt with AUTOINCREMENT kept (a property of SQLite's CREATE TABLE), and its sequence:
    # a job id handed out before, even of a deleted job, is never handed out again.
    bind = op.get_bind()
    sequence = bind.execute(
        sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'cs_containers'")
    ).scalar()
    with op.batch_alter_table(
        "cs_containers", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.add_column(sa.Column("workflow_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_cs_containers_workflow_id",
            "wrk_workflowdata",
            ["workflow_id"],
            ["id"],
            ondelete="SET NULL",
        )
    _keep_sequence(bind, sequence)


def _keep_sequence(bind, sequence: int | None) -> None:
    """cs_containers' AUTOINCREMENT sequence as it was before the table was rebuilt."""
    if sequence is None:
        return
    bind.execute(
        sa.text("UPDATE sqlite_sequence SET seq = max(seq, :seq) WHERE name = 'cs_containers'"),
        {"seq": sequence},
    )
    bind.execute(
        sa.text(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'cs_containers', :seq "
            "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'cs_containers')"
        ),
        {"seq": sequence},
    )


def downgrade() -> None:
    """Back to 0006 (tests replay older data folders; keep a copy of real ones): the column
    and the table go, the job ids' sequence stays."""
    bind = op.get_bind()
    sequence = bind.execute(
        sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'cs_containers'")
    ).scalar()
    with op.batch_alter_table(
        "cs_containers", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_constraint("fk_cs_containers_workflow_id", type_="foreignkey")
        batch_op.drop_column("workflow_id")
    _keep_sequence(bind, sequence)
    with op.batch_alter_table("wrk_workflowdata", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wrk_workflowdata_project"))
        batch_op.drop_index("ix_wrk_workflowdata_object")
    op.drop_table("wrk_workflowdata")
