#!/usr/bin/env bash
# Installs the official Kubernetes Python client, pinned with hashes
# (.ci/kube-client-requirements.txt), into its own venv .ci/kube-client/ (git-ignored), for
# tests/unit/test_kube_client_contract.py alone. Never into the interpreter that runs the suite:
# bot-bottle is standard-library-only at run time, and the client there would hide a wrong import.
# Does nothing when the venv already holds exactly these requirements; one line on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.ci/kube-client
reqs=.ci/kube-client-requirements.txt
stamp=$venv/requirements.installed

if [ -f "$stamp" ] && cmp -s "$reqs" "$stamp" && \
   "$venv/bin/python" -c 'import kubernetes.client' >/dev/null 2>&1; then
  exit 0
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
fail() {  # what: one line, with pip's last error line
  echo ".ci/kube-client.sh: $1: $(grep -E 'ERROR|error' "$log" | tail -n 1)" >&2
  rm -rf "$venv"
  exit 1
}
rm -rf "$venv"
python3 -m venv "$venv" >"$log" 2>&1 || fail "python3 -m venv failed"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --require-hashes --only-binary=:all: -r "$reqs" >"$log" 2>&1 || fail "pip install failed"
"$venv/bin/python" -c 'import kubernetes.client' >"$log" 2>&1 || fail "kubernetes.client does not import"
cp "$reqs" "$stamp"
