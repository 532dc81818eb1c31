"""Schema versions: data directories of every age start on the code's schema, or refuse clearly.

tests/fixtures/datadir-v0 was written by xnat-ml before the schema had versions (see
tests/fixtures/make_datadir_v0.py); every table in it has rows.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import requests
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from xnat_ml.server.process import ServerProcess, free_port
from xnat_ml.server.store import db, schema

V0 = Path(__file__).resolve().parents[1] / "fixtures" / "datadir-v0"
SESSION = "/data/projects/V0PROJ/subjects/SUBJ01/experiments/SESS01"


def _copy_v0(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(V0, data)
    return data


def _head_engine(path: Path):
    """An engine on a new database at `path`, brought to head as a server start does."""
    engine = create_engine(f"sqlite:///{path}")
    schema.upgrade(engine)
    return engine


def _model_differences(engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), schema.metadata())


def _dump(data: Path) -> list[str]:
    with closing(sqlite3.connect(data / db.DB_FILENAME)) as conn:
        return list(conn.iterdump())


def _serve(data: Path) -> subprocess.CompletedProcess:
    """`xnat-ml serve` that is expected to refuse at start (a started one is killed at 60 s)."""
    return subprocess.run(
        [sys.executable, "-m", "xnat_ml", "serve", "--data", str(data), "--port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_revision_0001_creates_what_create_all_made_before_versions():
    """0001 is frozen as the unversioned schema, to the constraint order in each CREATE TABLE."""
    query = ("SELECT type, name, sql FROM sqlite_master"
             " WHERE name NOT LIKE '%alembic_version%' AND name != 'sqlite_sequence'")  # fmt: skip
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        command.upgrade(schema.alembic_config(conn), schema.BASELINE)
        made = {(kind, name): " ".join((sql or "").split())
                for kind, name, sql in conn.exec_driver_sql(query)}  # fmt: skip
    with closing(sqlite3.connect(V0 / db.DB_FILENAME)) as old:
        before = {(kind, name): " ".join((sql or "").split())
                  for kind, name, sql in old.execute(query)}  # fmt: skip
    assert len(before) > 40 and made == before


def test_models_match_the_newest_revision(tmp_path):
    """The rule: every change to a model comes with a migration (`make migration MSG=...`)."""
    engine = _head_engine(tmp_path / "head.sqlite")
    assert _model_differences(engine) == []


def test_unversioned_data_dir_is_upgraded_in_place_with_its_data(tmp_path):
    data = _copy_v0(tmp_path)
    with ServerProcess(data, log_path=tmp_path / "server.log") as server:
        admin = requests.Session()
        admin.auth = ("admin", "admin")
        url = server.url
        projects = admin.get(f"{url}/data/projects").json()["ResultSet"]["Result"]
        assert [p["ID"] for p in projects] == ["V0PROJ"]
        scans = admin.get(f"{url}{SESSION}/scans").json()["ResultSet"]["Result"]
        assert [s["ID"] for s in scans] == ["1"]
        text = admin.get(f"{url}{SESSION}/scans/1/resources/NOTES/files/readme.txt").text
        assert text == "a small file written by schema v0\n"
        assessors = admin.get(f"{url}{SESSION}/assessors").json()["ResultSet"]["Result"]
        assert [a["label"] for a in assessors] == ["ROI01"]
        # alice's password hash and her Member role came through.
        alice = requests.Session()
        alice.auth = ("alice", "alice-pw")
        assert alice.get(f"{url}{SESSION}").ok
        commands = admin.get(f"{url}/xapi/commands").json()
        assert [c["name"] for c in commands] == ["dicom-to-nifti"]
        wrapper = commands[0]["xnat"][0]["id"]
        assert admin.get(f"{url}/xapi/projects/V0PROJ/wrappers/{wrapper}/enabled").json() is True
        subscriptions = admin.get(f"{url}/xapi/events/subscriptions").json()
        assert [s["name"] for s in subscriptions] == ["scan created: dicom-to-nifti"]
        assert len(admin.get(f"{url}/xapi/events/delivered").json()) == 1
        [job] = admin.get(f"{url}/xapi/containers").json()
        assert job["status"] == "Failed" and len(job["history"]) == 2
        assert "Schema of" in server.log_tail() and "matches 0001: stamped" in server.log_tail()

    migrated = create_engine(f"sqlite:///{data / db.DB_FILENAME}")
    fresh = _head_engine(tmp_path / "fresh.sqlite")
    with migrated.connect() as conn, fresh.connect() as new:
        assert MigrationContext.configure(conn).get_current_heads() == (schema.head(),)
        assert schema.shape(conn) == schema.shape(new)
        # AUTOINCREMENT, a property of CREATE TABLE that shape() and autogenerate do not see,
        # is what keeps deleted numbers (folders, job ids) from being handed out again
        assert _autoincrement_tables(conn) == _autoincrement_tables(new)
        assert {"accessions", "resources", "cs_containers"} <= _autoincrement_tables(conn)
    assert _model_differences(migrated) == []


def _autoincrement_tables(conn) -> set[str]:
    rows = conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
    return {name for name, sql in rows if "AUTOINCREMENT" in (sql or "")}


def test_newer_schema_refuses_to_start_with_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _head_engine(data / db.DB_FILENAME).dispose()
    with closing(sqlite3.connect(data / db.DB_FILENAME)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    done = _serve(data)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("xnat-ml: error: ") and "schema revision 9999" in last
    assert "newer xnat-ml" in last


def test_foreign_tables_are_refused_and_left_untouched(tmp_path):
    """A database without a revision whose tables are not 0001's is not stamped or changed."""
    data = _copy_v0(tmp_path)
    with closing(sqlite3.connect(data / db.DB_FILENAME)) as conn, conn:
        conn.execute("ALTER TABLE projects DROP COLUMN keywords")
    before = _dump(data)
    done = _serve(data)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "has no schema revision" in last and "table projects has other columns" in last
    assert _dump(data) == before  # not stamped, nothing changed


@pytest.fixture
def migrations_with_0002(tmp_path, monkeypatch) -> Path:
    """The shipped history plus a revision that rebuilds `projects` (a batch-mode column add)."""
    migrations = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "test_rebuild.py").write_text(
        'import sqlalchemy as sa\nfrom alembic import op\n\nrevision = "test_rebuild"\n'
        f'down_revision = "{schema.head()}"\n\n\ndef upgrade():\n'
        '    with op.batch_alter_table("projects", recreate="always") as batch:\n'
        '        batch.add_column(sa.Column("note", sa.String(), nullable=False,'
        ' server_default=""))\n'
    )
    monkeypatch.setattr(schema, "MIGRATIONS", migrations)
    return migrations


@pytest.mark.usefixtures("migrations_with_0002")
def test_a_table_rebuild_keeps_the_rows_that_refer_to_it(tmp_path):
    """Migrations run with SQLite's foreign keys off: rebuilding `projects` drops the old table,
    which with keys on would cascade-delete every subject, session and scan in the archive."""
    data = _copy_v0(tmp_path)
    engine = db.make_engine(data, foreign_keys=False)
    schema.upgrade(engine)
    engine.dispose()
    with closing(sqlite3.connect(data / db.DB_FILENAME)) as conn:
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        assert version == [("test_rebuild",)]
        assert conn.execute("SELECT id, note FROM projects").fetchall() == [("V0PROJ", "")]
        for table in ("subjects", "experiments", "scans", "resources", "project_roles"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table
