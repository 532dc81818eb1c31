"""The archive store: ORM models, database and schema versions, file store, catalog, journal,
event outbox, and the lookups the blueprints share (objects, resource files, uploads)."""
