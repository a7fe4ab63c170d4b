# Steps with a log each, progress lines and a closing summary, for scripts/test.sh.
# Source it after common.sh; it defines functions only.
#
# step NAME ESTIMATE COMMAND... runs COMMAND with its output in $LOG_DIR/<name>.log, prints one
# line when it starts (with ESTIMATE, the time it takes on two cores) and one when it ends, and
# a progress line every minute in between. On failure it shows the end of the log. The result
# goes into the summary that `summary` prints: each step, its count of tests (from libtest's
# `test result:` lines, or a `# tests: N passed, M failed` line the command prints), pass or
# fail, and wall time, then `N passed, N failed`.

STEP_NAMES=()
STEP_TESTS=()
STEP_RESULTS=()
STEP_SECONDS=()
PASSED=0
FAILED=0

steps_init() {
  LOG_DIR="$ROOT/target/test-logs/$(date +%Y%m%d-%H%M%S)"
  mkdir -p "$LOG_DIR"
  log "logs of each step: $LOG_DIR"
}

slug() { printf '%s' "$1" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | sed 's/-$//'; }

duration() {
  local s=$1
  if [ "$s" -ge 60 ]; then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi
}

# The last line worth showing while a step runs: what cargo compiles, or the test running.
progress_line() {
  grep -E '^\s*(Compiling|Checking|Running|test |Building)' "$1" 2>/dev/null | tail -n 1 |
    sed 's/^ *//' | cut -c1-100
}

# Sums libtest's `test result: ok. N passed; M failed; ...` lines, or reads the
# `# tests: N passed, M failed` line of commands that count their own checks. Prints
# "passed failed", or nothing when the log has neither.
count_tests() {
  local file=$1
  if grep -q '^# tests: ' "$file"; then
    grep '^# tests: ' "$file" | tail -n 1 | sed -E 's/^# tests: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/'
  elif grep -q '^test result: ' "$file"; then
    grep '^test result: ' "$file" |
      sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/' |
      awk '{p += $1; f += $2} END {print p, f}'
  fi
}

step() {
  local name=$1 estimate=$2
  shift 2
  local file
  file="$LOG_DIR/$(slug "$name").log"
  log "$name [two cores: $estimate] log: ${file#"$ROOT"/}"
  local start=$SECONDS
  "$@" >"$file" 2>&1 &
  local pid=$!
  (
    while sleep 60; do
      printf '    ... %s, %s so far: %s\n' "$name" "$(duration $((SECONDS - start)))" \
        "$(progress_line "$file")" >&2
    done
  ) &
  local ticker=$!
  local rc=0
  wait "$pid" || rc=$?
  kill "$ticker" 2>/dev/null
  wait "$ticker" 2>/dev/null
  local elapsed=$((SECONDS - start))
  local counts passed='' failed='' tests='-'
  counts=$(count_tests "$file")
  if [ -n "$counts" ]; then
    read -r passed failed <<<"$counts"
    tests=$((passed + failed))
  fi
  local result=pass
  if [ "$rc" -ne 0 ]; then
    result=FAIL
    # A failure that no test counted (a build, a lint) counts as one failed check.
    if [ -z "$failed" ] || [ "$failed" -eq 0 ]; then failed=1; fi
    printf '    FAILED after %s; the end of %s:\n' "$(duration "$elapsed")" "${file#"$ROOT"/}" >&2
    tail -n 60 "$file" | sed 's/^/    | /' >&2
  else
    printf '    ok in %s%s\n' "$(duration "$elapsed")" "${passed:+, $passed tests passed}" >&2
  fi
  PASSED=$((PASSED + ${passed:-0}))
  FAILED=$((FAILED + ${failed:-0}))
  STEP_NAMES+=("$name")
  STEP_TESTS+=("$tests")
  STEP_RESULTS+=("$result")
  STEP_SECONDS+=("$elapsed")
  return "$rc"
}

# Records a step that did not run because an earlier one it needs failed.
skip_step() {
  local name=$1 why=$2
  log "$name: skipped ($why)"
  STEP_NAMES+=("$name")
  STEP_TESTS+=("-")
  STEP_RESULTS+=("skipped")
  STEP_SECONDS+=(0)
}

summary() {
  local i total=0
  printf '\n%-44s %7s  %-7s %8s\n' "step" "tests" "result" "time"
  printf '%-44s %7s  %-7s %8s\n' "----" "-----" "------" "----"
  for i in "${!STEP_NAMES[@]}"; do
    printf '%-44s %7s  %-7s %8s\n' "${STEP_NAMES[$i]}" "${STEP_TESTS[$i]}" \
      "${STEP_RESULTS[$i]}" "$(duration "${STEP_SECONDS[$i]}")"
    total=$((total + STEP_SECONDS[i]))
  done
  printf '%-44s %7s  %-7s %8s\n' "all" "" "" "$(duration "$total")"
  if [ -n "${LOG_DIR:-}" ]; then printf 'logs: %s\n' "${LOG_DIR#"$ROOT"/}"; fi
  printf '\n%d passed, %d failed\n' "$PASSED" "$FAILED"
}
