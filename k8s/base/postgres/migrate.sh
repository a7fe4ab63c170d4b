#!/bin/sh
# Applies the SQL migrations in $MIGRATIONS_DIR (default /migrations) in file-name order, each
# exactly once, and records them in the table schema_migrations.
#
# - One run at a time: the run takes the advisory lock LOCK_KEY below, a session lock held until
#   the run ends, before it looks at anything. A second run (a retried Job pod, a local script
#   beside it) waits for the first to finish, then finds its files recorded and skips them, so
#   concurrent runs both succeed and no file is applied twice. A lock lives as long as the
#   session that took it, and each psql invocation is a session of its own, so the whole run is
#   one psql session: this script writes it as one psql script (every file's name and checksum)
#   and psql decides under the lock, with \gset and \if, whether each file is applied, skipped
#   or stops the run. The server releases the lock when that session ends, however it ends (a
#   killed pod included). Advisory locks are per database: runs against different databases on
#   one server do not wait for each other. The primary key on schema_migrations.filename stays
#   as a backstop: a run that somehow got past the lock could not record a file twice.
# - Re-runnable: files already recorded are skipped, so running the Job again (or after a crash)
#   only applies what is new.
# - Atomic per file: the file and its schema_migrations row go in one transaction (BEGIN, the
#   file, the insert, COMMIT). With ON_ERROR_STOP a failing statement ends psql, and the end of
#   the session rolls the open transaction back, so a failing file leaves no trace and the Job
#   can be retried. A file must therefore not need to run outside a transaction (CREATE INDEX
#   CONCURRENTLY, for example). Files share the session: RESET ALL after each one keeps a SET in
#   one from reaching the next.
# - Applied files are never edited (migrations/ rule): a recorded file whose checksum changed
#   stops the run instead of being silently skipped.
#
# Connection settings come from the standard PG* environment variables.
set -eu
# Keep the log to what happened (no "already exists, skipping" notices).
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"

dir=${MIGRATIONS_DIR:-/migrations}
# 'todomigr' in ASCII: an arbitrary key that only this script locks.
LOCK_KEY=8389750308618225522
run=$(mktemp)
trap 'rm -f "$run"' EXIT

tries=0
until pg_isready -q; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "migrate: PostgreSQL at ${PGHOST:-local socket}:${PGPORT:-5432} is not ready after 120 s" >&2
    exit 1
  fi
  sleep 2
done

# A psql meta-command argument in single quotes: backslashes and quotes doubled.
quoted() {
  printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")"
}

cat >"$run" <<SQL
select pg_advisory_lock($LOCK_KEY) as migrate_locked \gset
create table if not exists schema_migrations (
    filename   text primary key,
    checksum   text not null,
    applied_at timestamptz not null default now()
);
\set migrate_applied 0
\set migrate_skipped 0
SQL

for file in "$dir"/*.sql; do
  # An empty directory leaves the pattern unexpanded.
  [ -e "$file" ] || continue
  name=$(basename "$file")
  # From stdin: sha256sum marks a name that holds a backslash with a leading one.
  checksum=$(sha256sum <"$file" | cut -d' ' -f1)
  cat >>"$run" <<SQL
\set name $(quoted "$name")
\set checksum $checksum
select count(*) = 0 as migrate_new, coalesce(max(checksum), '') as migrate_known,
       coalesce(bool_and(checksum = :'checksum'), true) as migrate_same
  from schema_migrations where filename = :'name' \gset
\if :migrate_new
\echo migrate: applying :name
begin;
\i $(quoted "$file")
insert into schema_migrations (filename, checksum) values (:'name', :'checksum');
commit;
reset all;
select :migrate_applied + 1 as migrate_applied \gset
\elif :migrate_same
select :migrate_skipped + 1 as migrate_skipped \gset
\else
\warn migrate: :name changed after it was applied (recorded :migrate_known, now :checksum)
\set VERBOSITY terse
do \$\$ begin raise exception 'migrate: stopped, an applied file changed'; end \$\$;
\endif
SQL
done

printf '%s\n' '\echo migrate: :migrate_applied applied, :migrate_skipped already applied' >>"$run"

psql -X -q -v ON_ERROR_STOP=1 -f "$run"
