#!/bin/sh
# Applies the SQL migrations in $MIGRATIONS_DIR (default /migrations) in file-name order, each
# exactly once, and records them in the table schema_migrations.
#
# - Re-runnable: files already recorded are skipped, so running the Job again (or after a crash)
#   only applies what is new.
# - Atomic per file: the file and its schema_migrations row go in one transaction (psql -1 wraps
#   every -f in one BEGIN/COMMIT since PostgreSQL 15), so a failing file leaves no trace and the
#   Job can be retried. A file must therefore not need to run outside a transaction
#   (CREATE INDEX CONCURRENTLY, for example).
# - Applied files are never edited (migrations/ rule): a recorded file whose checksum changed
#   stops the run instead of being silently skipped.
# - Concurrent runs cannot both apply a file: the second insert of the same file name violates
#   the primary key and rolls its transaction back.
#
# Connection settings come from the standard PG* environment variables.
set -eu
# Keep the log to what happened (no "already exists, skipping" notices).
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"

dir=${MIGRATIONS_DIR:-/migrations}
psql="psql -X -q -v ON_ERROR_STOP=1"
record=$(mktemp)
trap 'rm -f "$record"' EXIT

tries=0
until pg_isready -q; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "migrate: PostgreSQL at ${PGHOST:-local socket}:${PGPORT:-5432} is not ready after 120 s" >&2
    exit 1
  fi
  sleep 2
done

$psql <<'SQL'
create table if not exists schema_migrations (
    filename   text primary key,
    checksum   text not null,
    applied_at timestamptz not null default now()
);
SQL

cat >"$record" <<'SQL'
insert into schema_migrations (filename, checksum) values (:'name', :'checksum');
SQL

applied=0
skipped=0
for file in "$dir"/*.sql; do
  # An empty directory leaves the pattern unexpanded.
  [ -e "$file" ] || continue
  name=$(basename "$file")
  checksum=$(sha256sum "$file" | cut -d' ' -f1)
  known=$(echo "select checksum from schema_migrations where filename = :'name';" |
    $psql -At -v name="$name")
  if [ -n "$known" ]; then
    if [ "$known" != "$checksum" ]; then
      echo "migrate: $name changed after it was applied (recorded $known, now $checksum)" >&2
      exit 1
    fi
    skipped=$((skipped + 1))
    continue
  fi
  echo "migrate: applying $name"
  $psql -1 -v name="$name" -v checksum="$checksum" -f "$file" -f "$record"
  applied=$((applied + 1))
done

echo "migrate: $applied applied, $skipped already applied"
