#!/usr/bin/env bash
# Runs the app locally on http://127.0.0.1:3000.
#
# Without DATABASE_URL it installs (if needed) and starts a throwaway PostgreSQL on a free
# loopback port; with DATABASE_URL=postgres://user:password@host:port/db it uses that database.
# Either way it applies migrations/, then serves the app with `spin up` when Spin is installed,
# else with the project's test host. Events go to the Dapr sidecar at DAPR_HOST:DAPR_HTTP_PORT
# (default 127.0.0.1:3500); without one they wait in the outbox until a relay run delivers them.
# Ctrl-C stops everything it started.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"

LISTEN=${LISTEN:-127.0.0.1:3000}
# The HS256 key of this run: a fresh random one unless JWT_SECRET is given (the app refuses
# secrets shorter than 32 bytes or containing "change-me").
JWT_SECRET=${JWT_SECRET:-$(openssl rand -base64 48 | tr -d '\n')}
# The token the sidecar presents on the routes only it calls (/dapr/subscribe, /api/events/...,
# /outbox-relay, /reminder-sweep): without one those routes refuse every call. Random per run
# unless APP_API_TOKEN is given; give the same value to the sidecar (dapr run's APP_API_TOKEN).
APP_API_TOKEN=${APP_API_TOKEN:-$(openssl rand -hex 32)}

command -v psql >/dev/null || apt_install postgresql-client
ensure_rust_targets

if [ -z "${DATABASE_URL:-}" ]; then
  start_postgres
  create_database todo
  DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/todo"
else
  log "applying migrations to $DATABASE_URL"
  PGDATABASE=$DATABASE_URL MIGRATIONS_DIR="$ROOT/migrations" sh k8s/base/postgres/migrate.sh >&2
fi

# Split the URL into the variables spin.toml assembles it from (and allows outbound access to).
eval "$(python3 - "$DATABASE_URL" <<'PY'
import sys, shlex
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
for name, value in [("DB_HOST", u.hostname or "127.0.0.1"), ("DB_PORT", str(u.port or 5432)),
                    ("DB_NAME", u.path.lstrip("/") or "postgres"), ("DB_USER", u.username or "postgres"),
                    ("DB_PASSWORD", u.password or "")]:
    print(f"export SPIN_VARIABLE_{name}={shlex.quote(value)}")
PY
)"
export SPIN_VARIABLE_JWT_SECRET=$JWT_SECRET
export SPIN_VARIABLE_APP_API_TOKEN=$APP_API_TOKEN
export SPIN_VARIABLE_DAPR_HOST=${DAPR_HOST:-127.0.0.1}
export SPIN_VARIABLE_DAPR_HTTP_PORT=${DAPR_HTTP_PORT:-3500}

log "a token for user alice (valid 24 h):"
echo "export TOKEN=$(mint_token alice "$JWT_SECRET")"
log "the app token the sidecar presents (header dapr-api-token):"
echo "export APP_TOKEN=$APP_API_TOKEN"

if command -v spin >/dev/null; then
  spin build
  # Not exec: the shell stays to stop the PostgreSQL it started once the server exits.
  spin up --listen "$LISTEN" --runtime-config-file runtime-config.toml
  exit
fi
log "Spin is not installed here: serving with the test host"
mkdir -p target
build_log="$ROOT/target/run-build.log"
log "building the components and the test host (seconds after scripts/test.sh; about 20 min"
log "on two cores from nothing); log: ${build_log#"$ROOT"/}"
# The same build as scripts/test.sh's, so that one reuses the other's (see build_tests).
if ! { build_components && build_tests; } >"$build_log" 2>&1; then
  tail -n 60 "$build_log" >&2
  log "the build failed; the whole log is $build_log"
  exit 1
fi
target/release/todo-host --manifest spin.toml --listen "$LISTEN"
