#!/usr/bin/env bash
# The project's test command: sets up the environment (scripts/setup_env.sh), then runs the whole pytest suite.
set -euo pipefail

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  cat <<'USAGE'
usage: bash scripts/test.sh [--fresh] [PYTEST_ARGS...]

Creates/updates .venv (scripts/setup_env.sh) and runs `pytest tests` in it.
  --fresh        rebuild the virtual environment from nothing first (what CI does)
  PYTEST_ARGS    passed to pytest, e.g. -k admin or -x; the files run on every core (at most 4 pytest
                 workers, pytest-xdist); -n 0 runs them in one process
Real-data tests read ../shared/data when it exists and are skipped when it does not.
USAGE
  exit 0
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
setup_args=()
if [ "${1:-}" = "--fresh" ]; then setup_args+=(--fresh); shift; fi
bash "$root/scripts/setup_env.sh" "${setup_args[@]}"
venv=${FAIRSEQ_ADMIN_VENV:-$root/.venv}
cd "$root"
echo "[test] running pytest in $venv"
# fairseq's console scripts (fairseq-train, ...) live in the venv's bin/
export PATH="$venv/bin:$PATH"
# one pytest worker per core, at most 4, each taking whole files (a file's fixtures are built once, as without
# workers); every test runs torch on one thread. `-n 0` (or -p no:xdist) runs everything in this process.
workers=(-n auto --maxprocesses 4 --dist loadfile)
for arg in "$@"; do case $arg in -n|-n*|--numprocesses*|no:xdist) workers=() ;; esac; done
echo "[test] pytest ${workers[*]:-(one process)} $*"
exec "$venv/bin/python" -m pytest tests ${workers[@]+"${workers[@]}"} "$@"
