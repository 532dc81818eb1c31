"""The Event Service's outbox and deliveries that happen once per event and subscription.

- event_outbox: events stored in the transaction of the change that raised them, delivered after
  a restart if they were not before (server/event_store.py EventRow).
- event_deliveries.event_id + UNIQUE(event_id, subscription_id): a second launch for the same
  event and subscription is impossible. Deliveries made before this revision have no event id.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 02:28:25.082628
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=True),
        sa.Column("user", sa.String(length=255), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("site_url", sa.String(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("delivered", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("event_outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_outbox_project"), ["project"], unique=False)
        batch_op.create_index("ix_event_outbox_state", ["state"], unique=False)

    with op.batch_alter_table("event_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event_id", sa.Integer(), nullable=True))
        batch_op.create_unique_constraint(
            "uq_event_deliveries_event_sub", ["event_id", "subscription_id"]
        )


def downgrade() -> None:
    """None: restore the copy of the data folder taken before upgrading (docs/server.md)."""
    raise NotImplementedError("revision 0003 has no downgrade; restore the data folder's copy")
