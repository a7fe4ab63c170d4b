#!/usr/bin/env bash
# Benchmarks the app against the physical floor (BENCHMARKS.md): installs PostgreSQL and the
# wasm target if missing, builds the components and the bench in release, starts a throwaway
# PostgreSQL on a free loopback port, runs `todo-bench` (all traffic stays on 127.0.0.1, every
# scenario is a fixed number of requests) and writes the report to target/bench/results.md.
# Extra arguments go to todo-bench, e.g. `bash scripts/bench.sh --requests 500`.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"

command -v psql >/dev/null || apt_install postgresql-client
ensure_rust_targets
build_components
log "building todo-bench (release)"
cargo build --locked --release -p todo-test-host --bin todo-bench

start_postgres
create_database todo_bench
mkdir -p target/bench
log "running todo-bench $*"
BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/todo_bench" \
  target/release/todo-bench "$@" | tee target/bench/results.md
log "report written to target/bench/results.md"
