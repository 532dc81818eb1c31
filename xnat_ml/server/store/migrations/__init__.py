"""Alembic's history of the store's schema: env.py, and one file per revision in versions/.

Run programmatically by `xnat_ml.server.store.schema` (no alembic.ini); see docs/server.md.
"""
