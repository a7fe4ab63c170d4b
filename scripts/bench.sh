#!/usr/bin/env bash
# Benchmarks the app against the physical floor (BENCHMARKS.md), on real Spin when a Spin 4.0
# CLI is installed (SPIN_BIN, PATH or ../shared/bin/spin), else on the test host: installs
# PostgreSQL and the wasm target if missing, builds the components and the bench in release,
# starts a throwaway PostgreSQL on a free loopback port, runs `todo-bench` (all traffic stays on 127.0.0.1, every
# scenario is a fixed number of requests) and writes the report to target/bench/results.md.
# Extra arguments go to todo-bench, e.g. `bash scripts/bench.sh --requests 500`.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"

command -v psql >/dev/null || apt_install postgresql-client
ensure_rust_targets
build_components
log "building todo-bench with the tests' build (seconds after scripts/test.sh)"
build_tests

start_postgres
create_database todo_bench
mkdir -p target/bench
# Real Spin when one is installed (the figures that count), unless the arguments pick a runtime.
runtime=()
if [[ " $* " != *" --runtime "* ]] && spin=$(find_spin); then
  runtime=(--runtime spin --spin "$spin")
fi
log "running todo-bench ${runtime[*]} $*"
BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/todo_bench" \
  target/release/todo-bench "${runtime[@]}" "$@" | tee target/bench/results.md
log "report written to target/bench/results.md"
