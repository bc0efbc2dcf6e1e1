#!/usr/bin/env bash
# Installs keepfit_jax's requirements into .venv (first run only) and trains + evaluates a demo.
#   bash scripts/demo.sh                         # CFP demo on built-in synthetic data
#   bash scripts/demo.sh configs/oct.py:demo     # another config; extra args go to keepfit_jax.main
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt
CONFIG=${1:-configs/cfp.py:demo}
NAME=$(basename "${CONFIG%%:*}" .py)
exec "$VENV/bin/python" -m keepfit_jax.main --config="$CONFIG" --workdir="${WORKDIR:-workdir/${NAME}_demo}" "${@:2}"
