#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs segbatch with its test extra
# into .venv, starts PostgreSQL and Redis when they are not running, runs the linters
# (ruff, mypy) and pytest.
# Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install -q -e '.[dev]'
bash tests/start_services.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy segbatch workers producer schema models
exec .venv/bin/pytest "$@"
