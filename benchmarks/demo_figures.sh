#!/usr/bin/env bash
# Runs the three demos from scratch, one after the other, and prints wall time and final metrics of each:
# the figures quoted in README.md. Usage: bash benchmarks/demo_figures.sh [python]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
for m in cfp ffa oct; do
  dir=$(mktemp -d /tmp/keepfit_demo_${m}_XXXX)
  start=$(date +%s)
  "$PY" -m keepfit_jax.main --config=configs/$m.py:demo --workdir="$dir" > "$dir/log.txt" 2>&1
  rc=$?
  echo "$m: exit $rc, $(( $(date +%s) - start )) s wall; $(grep '^final evaluation' "$dir/log.txt")"
done
