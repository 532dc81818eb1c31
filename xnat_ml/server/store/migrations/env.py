"""Alembic's environment: migrate the connection `xnat_ml.server.store.schema` hands over.

The caller owns the connection and its transaction (one write transaction for the whole upgrade,
with SQLite's foreign keys off so that batch-mode table rebuilds never cascade deletes).
"""

from alembic import context

from xnat_ml.server.store.schema import metadata

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata(),
    render_as_batch=True,  # SQLite alters most columns only by rebuilding the table
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
