"""Stored events carry no address: the Event Service launches in process.

- event_outbox.site_url goes: it held `SITE_URL` or the storing request's URL (a client's
  `Host`), which launches then went to. Events stored with one are delivered in process like
  any other, whatever port the server listens on now.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 22:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


# The table is rebuilt: keep its AUTOINCREMENT (deliveries name events by id, never reused).
KEEP = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("event_outbox", schema=None, table_kwargs=KEEP) as batch_op:
        batch_op.drop_column("site_url")


def downgrade() -> None:
    with op.batch_alter_table("event_outbox", schema=None, table_kwargs=KEEP) as batch_op:
        batch_op.add_column(sa.Column("site_url", sa.String(), nullable=False, server_default=""))
