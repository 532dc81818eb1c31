"""The schema before versions: every table as `create_all` made it (data dirs of xnat-ml <= 0.1.0).

Frozen: data directories written before Alembic are checked against what this revision creates,
then stamped with it. Never edit it; add a revision instead.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accessions",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(length=4), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "cs_commands",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("image", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "cs_containers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("command_id", sa.Integer(), nullable=False),
        sa.Column("wrapper_id", sa.Integer(), nullable=False),
        sa.Column("command_name", sa.String(length=255), nullable=False),
        sa.Column("wrapper_name", sa.String(length=255), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("root_element", sa.String(length=64), nullable=False),
        sa.Column("root_uri", sa.String(), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("backend", sa.String(length=32), nullable=False),
        sa.Column("backend_job_id", sa.String(length=255), nullable=True),
        sa.Column("bulk_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("status_time", sa.DateTime(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("resolved", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("work_dir", sa.String(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_cs_containers_bulk_id", "cs_containers", ["bulk_id"], unique=False)
    op.create_index("ix_cs_containers_project", "cs_containers", ["project"], unique=False)
    op.create_index("ix_cs_containers_status", "cs_containers", ["status"], unique=False)

    op.create_table(
        "event_subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("action_key", sa.String(length=255), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("event_filter", sa.JSON(), nullable=False),
        sa.Column("act_as_event_user", sa.Boolean(), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "projects",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("secondary_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("keywords", sa.String(), nullable=False),
        sa.Column("pi_firstname", sa.String(), nullable=False),
        sa.Column("pi_lastname", sa.String(), nullable=False),
        sa.Column("accessibility", sa.String(length=16), nullable=False),
        sa.Column("insert_user", sa.String(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("id"),
    )
    op.create_table(
        "users",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("first_name", sa.String(length=255), nullable=False),
        sa.Column("last_name", sa.String(length=255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "alias_tokens",
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=255), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("alias"),
        sa.ForeignKeyConstraint(["user_pk"], ["users.pk"], ondelete="CASCADE"),
    )
    op.create_table(
        "cs_container_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["job_id"], ["cs_containers.id"], ondelete="CASCADE"),
    )
    op.create_table(
        "cs_wrappers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("command_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("command_id", "name"),
        sa.ForeignKeyConstraint(["command_id"], ["cs_commands.id"], ondelete="CASCADE"),
    )
    op.create_table(
        "event_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=True),
        sa.Column("subscription", sa.JSON(), nullable=False),
        sa.Column("event_type", sa.String(length=255), nullable=False),
        sa.Column("event_status", sa.String(length=32), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=True),
        sa.Column("user", sa.String(length=255), nullable=True),
        sa.Column("object_uri", sa.String(length=1024), nullable=True),
        sa.Column("object_label", sa.String(length=255), nullable=True),
        sa.Column("object_xsi_type", sa.String(length=64), nullable=True),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("container_id", sa.String(length=64), nullable=True),
        sa.Column("filter_mismatch", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Boolean(), nullable=False),
        sa.Column("status_message", sa.String(), nullable=False),
        sa.Column("statuses", sa.JSON(), nullable=False),
        sa.Column("timestamp", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"], ["event_subscriptions.id"], ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_event_deliveries_project", "event_deliveries", ["project"], unique=False)
    op.create_index(
        "ix_event_deliveries_subscription_id", "event_deliveries", ["subscription_id"], unique=False
    )

    op.create_table(
        "project_roles",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("project_pk", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("user_pk", "project_pk"),
        sa.ForeignKeyConstraint(["user_pk"], ["users.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_pk"], ["projects.pk"], ondelete="CASCADE"),
    )
    op.create_table(
        "subjects",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_pk", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("insert_user", sa.String(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("project_pk", "label"),
        sa.UniqueConstraint("id"),
        sa.ForeignKeyConstraint(["project_pk"], ["projects.pk"], ondelete="CASCADE"),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["user_pk"], ["users.pk"], ondelete="CASCADE"),
    )
    op.create_table(
        "cs_wrapper_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("wrapper_id", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project", "wrapper_id"),
        sa.ForeignKeyConstraint(["wrapper_id"], ["cs_wrappers.id"], ondelete="CASCADE"),
    )
    op.create_table(
        "experiments",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_pk", sa.Integer(), nullable=False),
        sa.Column("subject_pk", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=False),
        sa.Column("xsi_type", sa.String(length=64), nullable=False),
        sa.Column("date", sa.String(length=10), nullable=False),
        sa.Column("time", sa.String(length=16), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("insert_user", sa.String(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("project_pk", "label"),
        sa.UniqueConstraint("id"),
        sa.ForeignKeyConstraint(["project_pk"], ["projects.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["subject_pk"], ["subjects.pk"], ondelete="CASCADE"),
    )
    op.create_index(
        "ix_experiments_project_type", "experiments", ["project_pk", "xsi_type"], unique=False
    )

    op.create_table(
        "assessors",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("experiment_pk", sa.Integer(), nullable=False),
        sa.Column("project_pk", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=False),
        sa.Column("xsi_type", sa.String(length=64), nullable=False),
        sa.Column("date", sa.String(length=10), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("insert_user", sa.String(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("project_pk", "label"),
        sa.UniqueConstraint("id"),
        sa.ForeignKeyConstraint(["experiment_pk"], ["experiments.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_pk"], ["projects.pk"], ondelete="CASCADE"),
    )
    op.create_table(
        "scans",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("experiment_pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("xsi_type", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("series_description", sa.String(), nullable=False),
        sa.Column("uid", sa.String(length=64), nullable=False),
        sa.Column("quality", sa.String(length=32), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("experiment_pk", "id"),
        sa.ForeignKeyConstraint(["experiment_pk"], ["experiments.pk"], ondelete="CASCADE"),
    )
    op.create_table(
        "resources",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=False),
        sa.Column("format", sa.String(), nullable=False),
        sa.Column("content", sa.String(), nullable=False),
        sa.Column("tags", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("project_pk", sa.Integer(), nullable=True),
        sa.Column("subject_pk", sa.Integer(), nullable=True),
        sa.Column("experiment_pk", sa.Integer(), nullable=True),
        sa.Column("scan_pk", sa.Integer(), nullable=True),
        sa.Column("assessor_pk", sa.Integer(), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.ForeignKeyConstraint(["project_pk"], ["projects.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["subject_pk"], ["subjects.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["experiment_pk"], ["experiments.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["scan_pk"], ["scans.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["assessor_pk"], ["assessors.pk"], ondelete="CASCADE"),
    )
    op.create_index("ix_resources_assessor_pk", "resources", ["assessor_pk"], unique=False)
    op.create_index("ix_resources_experiment_pk", "resources", ["experiment_pk"], unique=False)
    op.create_index("ix_resources_project_pk", "resources", ["project_pk"], unique=False)
    op.create_index("ix_resources_scan_pk", "resources", ["scan_pk"], unique=False)
    op.create_index("ix_resources_subject_pk", "resources", ["subject_pk"], unique=False)

    op.create_table(
        "resource_files",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("resource_pk", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("md5", sa.String(length=32), nullable=False),
        sa.Column("format", sa.String(), nullable=False),
        sa.Column("content", sa.String(), nullable=False),
        sa.Column("tags", sa.String(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("resource_pk", "path"),
        sa.ForeignKeyConstraint(["resource_pk"], ["resources.pk"], ondelete="CASCADE"),
    )
    op.create_index(
        "ix_resource_files_resource_pk", "resource_files", ["resource_pk"], unique=False
    )


def downgrade() -> None:
    """Drop every table (indexes go with them)."""
    for table in (
        "resource_files",
        "resources",
        "scans",
        "assessors",
        "experiments",
        "cs_wrapper_settings",
        "web_sessions",
        "subjects",
        "project_roles",
        "event_deliveries",
        "cs_wrappers",
        "cs_container_history",
        "alias_tokens",
        "users",
        "projects",
        "event_subscriptions",
        "cs_containers",
        "cs_commands",
        "accessions",
    ):
        op.drop_table(table)
