#!/usr/bin/env bash
# Runs every test on a fresh Debian machine: installs PostgreSQL and the wasm target if missing,
# checks formatting and lints, builds the components, starts a throwaway PostgreSQL on a free
# loopback port, runs the unit and integration tests (the compiled .wasm through the test host)
# and the Kubernetes manifest validation, then cleans up.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"

command -v psql >/dev/null || apt_install postgresql-client
ensure_rust_targets
rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt

log "cargo fmt --check"
cargo fmt --all -- --check

build_components

log "clippy (native and wasm32-wasip2)"
cargo clippy --locked --release --workspace --all-targets -- -D warnings
cargo clippy --locked --release --target wasm32-wasip2 -p todo-core -p todo-adapters "${COMPONENT_FLAGS[@]}" -- -D warnings

start_postgres
create_database todo_template
export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT"
export TEST_TEMPLATE_DB=todo_template

log "cargo test"
cargo test --locked --release --workspace

log "Kubernetes manifests"
bash scripts/k8s-validate.sh --require-routes
