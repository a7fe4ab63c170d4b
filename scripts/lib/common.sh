# Shared by scripts/test.sh, scripts/run.sh and scripts/bench.sh: installs what a fresh Debian
# machine lacks and runs a throwaway PostgreSQL on a free loopback port.
# Source it; it defines functions only.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COMPONENTS=(tasks-api subscriptions event-intake outbox-relay reminder-sweep)
COMPONENT_FLAGS=()
for c in "${COMPONENTS[@]}"; do COMPONENT_FLAGS+=(-p "$c"); done
# Where tasks-api serves openapi.json (todo_core::openapi::PATH).
OPENAPI_PATH=/api/openapi.json

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<major>/bin.
pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    apt_install postgresql postgresql-contrib
    dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$dir"
}

ensure_rust_targets() {
  if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    log "rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2
  fi
}

build_components() {
  log "building components (wasm32-wasip2, release)"
  (cd "$ROOT" && cargo build --locked --release --target wasm32-wasip2 "${COMPONENT_FLAGS[@]}")
}

clippy_all() {
  cargo clippy --locked --release --workspace --all-targets -- -D warnings &&
    cargo clippy --locked --release --target wasm32-wasip2 -p todo-core -p todo-adapters \
      "${COMPONENT_FLAGS[@]}" -- -D warnings
}

# Builds every test binary of the workspace, the test host's `todo-host` and `todo-bench`
# among them, in one cargo invocation, and writes the list of test binaries to $1 (directory,
# group, target, path). scripts/run.sh and scripts/bench.sh build the host the same way, so
# each reuses what the other built: a `cargo build -p todo-test-host` would resolve features
# differently (no dev-dependencies) and compile wasmtime a second time.
build_tests() {
  local list=${1:-/dev/null}
  cargo test --locked --release --workspace --no-run --message-format=json-render-diagnostics |
    python3 -c '
import json, os, sys
root = sys.argv[1]
out = open(sys.argv[2], "w")
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    pkg = os.path.relpath(os.path.dirname(m["manifest_path"]), root)
    name = m["target"]["name"]
    if pkg == "crates/todo-core":
        group = "core"
    elif pkg == "tests" and name in ("api", "reliability"):
        group = name
    else:
        group = "units"
    out.write("\t".join([pkg, group, name, m["executable"]]) + "\n")
' "$ROOT" "$list"
}

# Runs the test binaries of group $2 from the list $1, each from its package's directory as
# `cargo test` does; extra arguments go to each binary. Fails when any failed.
run_test_binaries() {
  local list=$1 group=$2 status=0 dir kind name path
  shift 2
  while IFS=$'\t' read -r dir kind name path; do
    [ "$kind" = "$group" ] || continue
    printf '## %s: %s\n' "$dir" "$name"
    (cd "$ROOT/$dir" && CARGO_MANIFEST_DIR="$ROOT/$dir" "$path" "$@") </dev/null || status=1
  done <"$list"
  return "$status"
}

# The Spin CLI to test against: $SPIN_BIN, else `spin` on PATH, else ../shared/bin/spin next
# to the repository; only a 4.0.x (the Spin this app targets). Prints its path.
find_spin() {
  local candidate
  for candidate in "${SPIN_BIN:-}" "$(command -v spin 2>/dev/null)" "$ROOT/../shared/bin/spin"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if "$candidate" --version 2>/dev/null | grep -q '^spin 4\.0\.'; then
      (cd "$(dirname "$candidate")" && printf '%s/%s\n' "$(pwd)" "$(basename "$candidate")")
      return 0
    fi
  done
  return 1
}

# Runs a command with the integration tests pointed at the Spin CLI $1 instead of the host.
run_on_spin() {
  local spin=$1
  shift
  TEST_RUNTIME=spin SPIN_BIN=$spin "$@"
}

# Makes (or refreshes) the virtualenv $1 with the pinned requirements $2...; it is rebuilt only
# when the list changes. Debian splits venv/ensurepip out of python3, so it installs
# python3-venv when missing.
ensure_venv() {
  local venv=$1 wanted
  shift
  wanted=$(printf '%s\n' "$@")
  if [[ -x "$venv/bin/python" ]] && [[ "$(cat "$venv/.requirements" 2>/dev/null)" == "$wanted" ]]; then
    return 0
  fi
  log "preparing $venv"
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$@"
  printf '%s\n' "$wanted" >"$venv/.requirements"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Starts PostgreSQL in a temporary directory on a free port, owned by the `postgres` user
# (initdb and postgres refuse to run as root). Sets PG_PORT, PG_DIR and PG_ADMIN_URL and
# registers cleanup. Stops only the server it started.
start_postgres() {
  local bin user
  bin=$(pg_bin)
  PG_DIR=$(mktemp -d /tmp/todo-pg.XXXXXX)
  PG_PORT=$(free_port)
  user=$(id -un)
  if [ "$(id -u)" -eq 0 ]; then
    user=postgres
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$PG_DIR"
  fi
  run_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT ($PG_DIR)"
  run_pg "'$bin/initdb' -D '$PG_DIR/data' -U postgres -A trust -E UTF8 --locale=C.UTF-8 >'$PG_DIR/initdb.log' 2>&1"
  run_pg "'$bin/pg_ctl' -D '$PG_DIR/data' -l '$PG_DIR/server.log' -w -o \"-p $PG_PORT -k '$PG_DIR' -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off\" start >/dev/null"
  PG_BIN=$bin
  PG_ADMIN_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  export PG_PORT PG_DIR PG_BIN PG_ADMIN_URL
  trap stop_postgres EXIT
}

stop_postgres() {
  if [ -n "${PG_DIR:-}" ] && [ -f "$PG_DIR/data/postmaster.pid" ]; then
    log "stopping PostgreSQL"
    if [ "$(id -u)" -eq 0 ]; then
      su postgres -s /bin/sh -c "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -m fast stop" >/dev/null 2>&1 || true
    else
      "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast stop >/dev/null 2>&1 || true
    fi
  fi
  [ -n "${PG_DIR:-}" ] && rm -rf "$PG_DIR"
}

# Creates database $1 and applies migrations/ with the same script the Kubernetes Job runs.
create_database() {
  local name=$1
  psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "create database \"$name\"" >/dev/null
  PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=postgres PGDATABASE=$name MIGRATIONS_DIR="$ROOT/migrations" \
    sh "$ROOT/k8s/base/postgres/migrate.sh" >&2
}

# Prints an HS256 JWT for subject $1, signed with $2, valid for a day: enough for curl examples
# against a local run. Uses openssl, which every Debian machine has.
mint_token() {
  local sub=$1 secret=$2 exp header payload signature
  exp=$(($(date +%s) + 86400))
  b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
  header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
  payload=$(printf '{"sub":"%s","exp":%s}' "$sub" "$exp" | b64url)
  signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -hmac "$secret" -binary | b64url)
  printf '%s.%s.%s\n' "$header" "$payload" "$signature"
}
