"""Versions of the store's schema: on start, bring the data directory's database to the code's head.

Alembic keeps the history (xnat_ml/server/store/migrations/versions, revision 0001 is the schema
that data directories had before versions existed). `upgrade` runs in one write transaction: a new
database is built by running every revision, an unversioned one is checked against 0001, stamped
and upgraded, and one stamped by a newer xnat-ml is refused (its schema is unknown here).
`python -m xnat_ml.server.store.schema revision -m MESSAGE` writes the next revision
(docs/server.md).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, create_engine, inspect

from xnat_ml.errors import XnatMlError
from xnat_ml.store import Base

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"  # what `create_all` made before the schema had versions
# Every module that declares tables on `xnat_ml.store.Base`: importing them completes the metadata.
TABLE_MODULES = (
    "xnat_ml.server.store.models",
    "xnat_ml.server.store.catalog",
    "xnat_ml.server.store.event_store",
    "xnat_ml.server.store.job_writes",
    "xnat_ml.server.store.ml_assets",
    "xnat_ml.server.store.saved_searches",
    "xnat_ml.server.store.shares",
    "xnat_ml.server.store.prearchive",
    "xnat_ml.containers.jobs",
    "xnat_ml.containers.registry",
)


def metadata() -> MetaData:
    """The models' metadata with every table declared."""
    for name in TABLE_MODULES:
        importlib.import_module(name)
    return Base.metadata


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration without an alembic.ini; env.py migrates `connection`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def upgrade(engine: Engine) -> None:
    """Bring the database behind `engine` to head, or refuse with one line naming the problem.

    Give an engine with SQLite's foreign keys off: a batch-mode migration rebuilds a table by
    dropping it, which with foreign keys on would cascade deletes into the tables referring to it.
    The keys are checked before the transaction commits instead.
    """
    where = engine.url.database
    with engine.begin() as conn:
        config = alembic_config(conn)
        scripts = ScriptDirectory.from_config(config)
        current = MigrationContext.configure(conn).get_current_heads()
        known = {script.revision for script in scripts.walk_revisions()}
        for revision in current:
            if revision not in known:
                raise XnatMlError(
                    f"{where}: schema revision {revision} was written by a newer xnat-ml (this "
                    f"one knows up to {scripts.get_current_head()}); upgrade xnat-ml to serve it"
                )
        if not current and set(inspect(conn).get_table_names()) - {"alembic_version"}:
            problems = _baseline_differences(conn)
            if problems:
                raise XnatMlError(
                    f"{where}: has no schema revision and its tables differ from revision "
                    f"{BASELINE} ({'; '.join(problems[:5])}); not written by xnat-ml?"
                )
            command.stamp(config, BASELINE)
            log.info("Schema of %s: unversioned, matches %s: stamped", where, BASELINE)
            current = (BASELINE,)
        if current == (scripts.get_current_head(),):
            return
        command.upgrade(config, "head")
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise XnatMlError(
                f"{where}: the upgrade to schema revision {scripts.get_current_head()} would "
                f"break {len(broken)} foreign key(s), first in table {broken[0][0]}; not upgraded"
            )
    log.info("Schema of %s: %s -> %s", where, current[0] if current else "new", head())


def shape(conn: Connection) -> dict[str, dict]:
    """What a schema is made of, as SQLAlchemy reflects it: per table its columns (type,
    nullability, primary key), indexes, unique constraints and foreign keys."""
    found = inspect(conn)
    tables = {}
    for table in sorted(found.get_table_names()):
        if table == "alembic_version":
            continue
        tables[table] = {
            "columns": {c["name"]: (str(c["type"]), c["nullable"], c["primary_key"])
                        for c in found.get_columns(table)},  # fmt: skip
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in found.get_indexes(table)),  # fmt: skip
            "unique": sorted(tuple(u["column_names"]) for u in found.get_unique_constraints(table)),
            "foreign_keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"],
                 tuple(f["referred_columns"]), str(f.get("options", {}).get("ondelete")))
                for f in found.get_foreign_keys(table)
            ),  # fmt: skip
        }
    return tables


def _baseline_differences(conn: Connection) -> list[str]:
    """How the tables behind `conn` differ from those revision BASELINE creates (none: equal)."""
    reference = create_engine("sqlite://")
    try:
        with reference.begin() as ref:
            command.upgrade(alembic_config(ref), BASELINE)
            expected = shape(ref)
    finally:
        reference.dispose()
    actual = shape(conn)
    problems = [f"table {t} is missing" for t in expected if t not in actual]
    problems += [f"table {t} is unexpected" for t in actual if t not in expected]
    for table in expected.keys() & actual.keys():
        for part, value in expected[table].items():
            if actual[table][part] != value:
                problems.append(f"table {table} has other {part.replace('_', ' ')}")
    return sorted(problems)


def _revision(message: str) -> None:
    """Write the next revision: what the models hold that a database at head lacks."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'head.sqlite'}")
        try:
            upgrade(engine)
            with engine.begin() as conn:
                config = alembic_config(conn)
                config.set_section_option("post_write_hooks", "hooks", "fix, format")
                for hook, args in (("fix", "check --fix --quiet"), ("format", "format --quiet")):
                    config.set_section_option("post_write_hooks", f"{hook}.type", "module")
                    config.set_section_option("post_write_hooks", f"{hook}.module", "ruff")
                    config.set_section_option(
                        "post_write_hooks", f"{hook}.options", f"{args} REVISION_SCRIPT_FILENAME"
                    )
                number = int(head()) + 1
                command.revision(config, message, autogenerate=True, rev_id=f"{number:04d}")
        finally:
            engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m xnat_ml.server.store.schema", description="Developer tools for the schema."
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    revision = verbs.add_parser("revision", help="write the next revision from the models")
    revision.add_argument("-m", "--message", required=True, help="what the revision changes")
    args = parser.parse_args(argv)
    if args.verb == "revision":
        _revision(args.message)


if __name__ == "__main__":
    main()
