#!/usr/bin/env bash
# Runs every test on a fresh Debian machine: installs PostgreSQL and the wasm target if missing,
# checks formatting and lints, builds the components and the tests once, starts a throwaway
# PostgreSQL on a free loopback port, runs the unit, integration and reliability tests (the
# compiled .wasm through the test host, and through real Spin when one is installed), the API
# contract check (schemathesis against openapi.json, scripts/contract.sh, on both runtimes) and
# the Kubernetes manifest validation, then prints one summary table and cleans up.
#
# Each step's output goes to a log under target/test-logs/ (shown when the step fails); the
# terminal gets one line per step, a progress line a minute, and the summary, which ends with
# `N passed, N failed`. A step that fails does not stop the steps that do not need it.
set -uo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/steps.sh"
cd "$ROOT"

steps_init
trap summary EXIT

# schemathesis against openapi.json on runtime $2 (scripts/contract.sh), its summary line shown.
# A fixed seed, so a run that fails fails again the same way; scripts/contract.sh alone draws
# a new one each time (and prints it) to explore further.
contract() {
  local label=$1 runtime=$2 log
  local name="API contract (schemathesis) on $label"
  step "$name" "4 min first (venv), 3 min after" \
    bash scripts/contract.sh --runtime "$runtime" --max-time "${CONTRACT_MAX_TIME:-150}" \
    --seed "${CONTRACT_SEED:-20261203}"
  log="$LOG_DIR/$(slug "$name").log"
  grep '^schemathesis on ' "$log" | sed 's/^/    /' >&2 || true
}

# Set-up failures stop the run: nothing after them could work.
command -v psql >/dev/null || apt_install postgresql-client || exit 1
ensure_rust_targets || exit 1
rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt ||
  exit 1

step "cargo fmt --check" "a second" cargo fmt --all -- --check
built=0
step "build components (wasm32-wasip2)" "3 min first, seconds after" build_components && built=1
step "clippy, native and wasm32-wasip2" "6 min first, 1 min after" clippy_all

BINARIES="$LOG_DIR/test-binaries.tsv"
tests_built=0
step "build the test host and the tests" "15 min first, seconds after" \
  build_tests "$BINARIES" && tests_built=1

start_postgres
# start_postgres registers its own cleanup; the summary stays the last thing printed.
trap 'stop_postgres; summary' EXIT
create_database todo_template >"$LOG_DIR/database.log" 2>&1 ||
  { tail -n 20 "$LOG_DIR/database.log" >&2; exit 1; }
export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT"
export TEST_TEMPLATE_DB=todo_template

if [ "$tests_built" -eq 1 ]; then
  step "core unit and property tests" "30 s" run_test_binaries "$BINARIES" core
  step "host, adapter and component unit tests" "seconds" run_test_binaries "$BINARIES" units
else
  skip_step "unit tests" "the tests did not build"
fi
if [ "$tests_built" -eq 1 ] && [ "$built" -eq 1 ]; then
  step "API tests on the test host" "1 min" run_test_binaries "$BINARIES" api
  if spin=$(find_spin); then
    step "API tests on real Spin $("$spin" --version | awk '{print $2}')" "1 min" \
      run_on_spin "$spin" run_test_binaries "$BINARIES" api --skip host_only
  else
    skip_step "API tests on real Spin" "no Spin 4.0 CLI (SPIN_BIN, PATH, ../shared/bin/spin)"
  fi
  step "reliability suite (load, faults, bad input)" "2 min" \
    run_test_binaries "$BINARIES" reliability
  contract "the test host" host
  if spin=$(find_spin); then
    SPIN_BIN=$spin contract "real Spin" spin
  else
    skip_step "API contract (schemathesis) on real Spin" "no Spin 4.0 CLI"
  fi
else
  skip_step "integration tests" "the components or the tests did not build"
fi

step "Kubernetes manifests" "15 s first (venv), seconds after" \
  bash scripts/k8s-validate.sh --require-routes

[ "$FAILED" -eq 0 ]
