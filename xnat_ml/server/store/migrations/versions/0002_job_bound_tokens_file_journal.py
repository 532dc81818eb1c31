"""Job-bound alias tokens, the file journal, and numbers that are never reused.

- alias_tokens.job_id / parent_alias and web_sessions.token_alias: a token belongs to a job (or to
  the token that minted it) and dies with it; a session opened with a token ends with it.
- file_journal: the moves the write protocol still owes the archive (server/journal.py).
- resources and cs_containers become AUTOINCREMENT, so a deleted resource's folder or a deleted
  job's id is never handed out again (a table rebuild in SQLite; rows and numbers kept).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 02:06:21.033631
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "file_journal",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=2048), nullable=False),
        sa.Column("target", sa.String(length=2048), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("alias_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_alias", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("job_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_alias_tokens_job_id"), ["job_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_alias_tokens_parent_alias"), ["parent_alias"], unique=False
        )
        batch_op.create_foreign_key(
            "fk_alias_tokens_parent_alias",
            "alias_tokens",
            ["parent_alias"],
            ["alias"],
            ondelete="CASCADE",
        )

    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_alias", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_web_sessions_token_alias"), ["token_alias"], unique=False
        )
        batch_op.create_foreign_key(
            "fk_web_sessions_token_alias",
            "alias_tokens",
            ["token_alias"],
            ["alias"],
            ondelete="CASCADE",
        )

    # AUTOINCREMENT is a property of the CREATE TABLE in SQLite: rebuild both tables. Copied rows
    # keep their keys, and sqlite_sequence starts from the largest of them.
    for table in ("resources", "cs_containers"):
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass


def downgrade() -> None:
    """None: restore the copy of the data folder taken before upgrading (docs/server.md)."""
    raise NotImplementedError("revision 0002 has no downgrade; restore the data folder's copy")
