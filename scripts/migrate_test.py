"""Tests of k8s/base/postgres/migrate.sh against a real PostgreSQL server.

Each test works in a fresh database of its own on the server named by TEST_DATABASE_URL
(postgres://user@host:port, as the integration tests use it; scripts/test.sh sets it) and drops it
afterwards. Needs psql and pg_isready on PATH. Run:

    TEST_DATABASE_URL=postgres://postgres@127.0.0.1:55432 \\
        python3 -m unittest discover -s scripts -p 'migrate_test.py'

The concurrency test is deterministic: it holds a lock on schema_migrations, so both runs are
stopped at their first look at it, until both are waiting; only then does it let them go.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import unittest
import uuid
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "k8s" / "base" / "postgres" / "migrate.sh"
MIGRATIONS = REPO / "migrations"


def server_env() -> dict[str, str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        raise RuntimeError(
            "TEST_DATABASE_URL is not set: run with scripts/test.sh, or point it at a server "
            "(postgres://postgres@127.0.0.1:55432)"
        )
    parts = urlparse(url)
    env = {
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "PGUSER": parts.username or "postgres",
    }
    if parts.password:
        env["PGPASSWORD"] = parts.password
    return env


class MigrateTest(unittest.TestCase):
    def setUp(self):
        self.server = server_env()
        self.db = f"todo_migrate_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.psql("postgres", f'create database "{self.db}"')
        self.addCleanup(self.psql, "postgres", f'drop database if exists "{self.db}" with (force)')

    def env(self, migrations: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(self.server, PGDATABASE=self.db, MIGRATIONS_DIR=str(migrations))
        return env

    def psql(self, db: str, sql: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(self.server, PGDATABASE=db)
        done = subprocess.run(
            ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
            env=env, capture_output=True, text=True, timeout=60,
        )
        if done.returncode != 0:
            raise AssertionError(f"psql {sql!r}: {done.stderr}")
        return done.stdout.strip()

    def start(self, migrations: Path) -> subprocess.Popen:
        return subprocess.Popen(
            ["sh", str(SCRIPT)], env=self.env(migrations),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def migrate(self, migrations: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sh", str(SCRIPT)], env=self.env(migrations),
            capture_output=True, text=True, timeout=120,
        )

    def recorded(self) -> list[tuple[str, int]]:
        rows = self.psql(
            self.db,
            "select filename, count(*) from schema_migrations group by filename order by filename",
        )
        return [(name, int(n)) for name, n in (line.split("|") for line in rows.splitlines())]

    def sql_dir(self, files: dict[str, str]) -> Path:
        directory = Path(tempfile.mkdtemp(prefix="migrations-"))
        self.addCleanup(shutil.rmtree, directory)
        for name, text in files.items():
            (directory / name).write_text(text)
        return directory

    def test_applies_each_file_once_and_skips_it_on_the_next_run(self):
        first = self.migrate(MIGRATIONS)
        self.assertEqual(first.returncode, 0, first.stderr)
        files = sorted(p.name for p in MIGRATIONS.glob("*.sql"))
        self.assertEqual(self.recorded(), [(name, 1) for name in files])
        self.assertIn(f"migrate: {len(files)} applied, 0 already applied", first.stdout)

        again = self.migrate(MIGRATIONS)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn(f"migrate: 0 applied, {len(files)} already applied", again.stdout)
        self.assertNotIn("applying", again.stdout)
        self.assertEqual(self.recorded(), [(name, 1) for name in files])

    def test_a_failing_file_leaves_no_trace_and_stops_the_run(self):
        migrations = self.sql_dir({
            "0001_a.sql": "create table a (id int);",
            "0002_b.sql": "create table b (id int);\nselect no_such_function();",
            "0003_c.sql": "create table c (id int);",
        })
        done = self.migrate(migrations)
        self.assertNotEqual(done.returncode, 0, done.stdout)
        self.assertIn("no_such_function", done.stderr)
        self.assertEqual(self.recorded(), [("0001_a.sql", 1)])
        tables = self.psql(
            self.db, "select string_agg(relname, ',' order by relname) from pg_class "
            "where relname in ('a', 'b', 'c') and relkind = 'r'",
        )
        self.assertEqual(tables, "a", "0002 rolled back whole, 0003 never run")

    def test_a_changed_file_stops_the_run(self):
        migrations = self.sql_dir({"0001_a.sql": "create table a (id int);"})
        self.assertEqual(self.migrate(migrations).returncode, 0)
        (migrations / "0001_a.sql").write_text("create table a (id bigint);")
        (migrations / "0002_b.sql").write_text("create table b (id int);")
        done = self.migrate(migrations)
        self.assertNotEqual(done.returncode, 0, done.stdout)
        self.assertIn("migrate: 0001_a.sql changed after it was applied", done.stderr)
        self.assertEqual(self.recorded(), [("0001_a.sql", 1)], "0002 not applied")

    def test_two_runs_at_once_both_succeed_and_apply_each_file_once(self):
        # schema_migrations exists (an empty run creates it), and this session locks it, so
        # each run stops where it first reads it.
        empty = self.sql_dir({})
        self.assertEqual(self.migrate(empty).returncode, 0)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(self.server, PGDATABASE=self.db)
        holder = subprocess.Popen(
            ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.addCleanup(lambda: holder.poll() is None and holder.kill())
        holder.stdin.write(
            "begin;\nlock table schema_migrations in access exclusive mode;\n"
            "select 'locked';\n"
        )
        holder.stdin.flush()
        self.assertEqual(holder.stdout.readline().strip(), "locked")

        runs = [self.start(MIGRATIONS), self.start(MIGRATIONS)]
        for run in runs:
            self.addCleanup(lambda run=run: run.poll() is None and run.kill())
        # Both runs are blocked on a lock (on the table, or one on the other's lock).
        deadline = time.monotonic() + 30
        waiting = 0
        while time.monotonic() < deadline:
            waiting = int(self.psql(
                self.db,
                "select count(*) from pg_stat_activity where datname = current_database() "
                "and wait_event_type = 'Lock' and backend_type = 'client backend'",
            ))
            if waiting >= 2:
                break
            time.sleep(0.05)
        self.assertEqual(waiting, 2, "both runs wait before either applies anything")
        holder.stdin.write("commit;\n")
        holder.communicate(timeout=30)

        outputs = [run.communicate(timeout=120) for run in runs]
        for run, (out, err) in zip(runs, outputs):
            self.assertEqual(run.returncode, 0, f"stdout:\n{out}\nstderr:\n{err}")
        files = sorted(p.name for p in MIGRATIONS.glob("*.sql"))
        self.assertEqual(self.recorded(), [(name, 1) for name in files])
        applying = sorted(line for out, _ in outputs for line in out.splitlines()
                          if line.startswith("migrate: applying "))
        self.assertEqual(applying, [f"migrate: applying {name}" for name in files],
                         "each file applied by one run")
        summaries = sorted(out.splitlines()[-1] for out, _ in outputs)
        self.assertEqual(summaries, [
            f"migrate: 0 applied, {len(files)} already applied",
            f"migrate: {len(files)} applied, 0 already applied",
        ])


if __name__ == "__main__":
    unittest.main()
