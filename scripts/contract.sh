#!/usr/bin/env bash
# Checks the running app against its own OpenAPI document (openapi.json) with schemathesis:
# the served document must equal the committed one and pass openapi-spec-validator, then
# schemathesis sends generated valid and invalid requests (examples, coverage, fuzzing and the
# stateful phase through the document's links: create -> get/patch/complete/delete) with a
# valid token for one user, and fails on any disagreement.
#
#   bash scripts/contract.sh [--runtime host|spin] [--examples N] [--max-time SECONDS]
#
# It serves the built components (scripts/test.sh builds them; run it, or build_components and
# build_tests, first) with the test host, or with real Spin (`--runtime spin`, the Spin CLI
# found as scripts/test.sh finds it). Without PG_PORT it starts a throwaway PostgreSQL. The
# tools live in a virtualenv under ~/.cache/todo-spin (CONTRACT_VENV to move it).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"

runtime=host
examples=${CONTRACT_EXAMPLES:-25}
max_time=${CONTRACT_MAX_TIME:-240}
seed=${CONTRACT_SEED:-$RANDOM}
while [ $# -gt 0 ]; do
  case $1 in
    --runtime) runtime=$2; shift 2 ;;
    --examples) examples=$2; shift 2 ;;
    --max-time) max_time=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

venv=${CONTRACT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/todo-spin/contract-venv}
ensure_venv "$venv" "schemathesis==4.32.5" "openapi-spec-validator==0.9.0"

own_pg=0
if [ -z "${PG_PORT:-}" ]; then
  command -v psql >/dev/null || apt_install postgresql-client
  start_postgres
  own_pg=1
fi
db="contract_${runtime}_$$"
create_database "$db" >/dev/null

port=$(free_port)
base="http://127.0.0.1:$port"
user=contract-user
secret=$(openssl rand -base64 48 | tr -d '\n')
export SPIN_VARIABLE_DB_HOST=127.0.0.1 SPIN_VARIABLE_DB_PORT=$PG_PORT SPIN_VARIABLE_DB_NAME=$db
export SPIN_VARIABLE_DB_USER=postgres SPIN_VARIABLE_DB_PASSWORD=
export SPIN_VARIABLE_JWT_SECRET=$secret
export SPIN_VARIABLE_APP_API_TOKEN=$(openssl rand -hex 32)
# No sidecar: events wait in the outbox, which is what a write must survive anyway.
export SPIN_VARIABLE_DAPR_HOST=127.0.0.1 SPIN_VARIABLE_DAPR_HTTP_PORT=$(free_port)

app_log=$(mktemp /tmp/contract-app.XXXXXX.log)
case $runtime in
  host)
    [ -x target/release/todo-host ] || { log "target/release/todo-host is not built"; exit 1; }
    target/release/todo-host --manifest spin.toml --listen "127.0.0.1:$port" >"$app_log" 2>&1 &
    ;;
  spin)
    spin=$(find_spin) || { log "no Spin 4.0 CLI (SPIN_BIN, PATH, ../shared/bin/spin)"; exit 1; }
    "$spin" up --from spin.toml --listen "127.0.0.1:$port" \
      --runtime-config-file runtime-config.toml >"$app_log" 2>&1 &
    ;;
  *) echo "--runtime is host or spin" >&2; exit 2 ;;
esac
app_pid=$!
stop_app() {
  kill "$app_pid" 2>/dev/null || true
  wait "$app_pid" 2>/dev/null || true
  rm -f "$app_log"
}
# Stops only what this script started: a PostgreSQL given by PG_PORT stays up.
trap 'stop_app; [ "$own_pg" -eq 0 ] || stop_postgres' EXIT

for _ in $(seq 1 150); do
  curl -fsS -o /dev/null "$base$OPENAPI_PATH" 2>/dev/null && break
  kill -0 "$app_pid" 2>/dev/null || { tail -n 40 "$app_log" >&2; exit 1; }
  sleep 0.2
done

served=$(mktemp /tmp/openapi.XXXXXX.json)
curl -fsS "$base$OPENAPI_PATH" -o "$served"
if ! cmp -s "$served" openapi.json; then
  log "the served $OPENAPI_PATH differs from openapi.json"
  diff <(python3 -m json.tool "$served") <(python3 -m json.tool openapi.json) | head -n 20 >&2
  exit 1
fi
"$venv/bin/openapi-spec-validator" "$served"
rm -f "$served"

log "schemathesis on $runtime ($base), seed $seed, $examples examples per operation, at most ${max_time}s"
export CONTRACT_TOKEN=$(mint_token "$user" "$secret") CONTRACT_USER=$user
export CONTRACT_HOOKS=$ROOT/tests/contract/hooks.py
report=$(mktemp -d /tmp/contract-report.XXXXXX)
status=0
"$venv/bin/schemathesis" --config-file tests/contract/schemathesis.toml run "$base$OPENAPI_PATH" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection,positive_data_acceptance \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "$examples" --max-time "$max_time" --seed "$seed" \
  --no-color --report junit --report-dir "$report" | tee "$report/output.txt" || status=$?
{
  printf 'schemathesis on %s: ' "$runtime"
  grep -E '^ *[0-9]+ generated' "$report/output.txt" | tail -n 1 | sed -E 's/^ +//' | tr -d '\n'
  printf '; '
  grep -E '^=+ .+ in [0-9.]+s =+$' "$report/output.txt" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//'
} || true
# For scripts/test.sh: schemathesis' own summary, and the count of its JUnit report (one test
# per operation and one for the stateful phase).
python3 - "$report" "$runtime" <<'PY'
import sys, pathlib, xml.etree.ElementTree as ET
cases = failed = 0
for path in pathlib.Path(sys.argv[1]).glob("*.xml"):
    for case in ET.parse(path).iter("testcase"):
        cases += 1
        failed += any(child.tag in ("failure", "error") for child in case)
print(f"# tests: {cases - failed} passed, {failed} failed")
PY
rm -rf "$report"
exit "$status"
