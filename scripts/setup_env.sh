#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment and installs fairseq_admin into it, pinned as setup.py says.
# Safe to re-run: an environment that is already up to date with setup.py is left alone.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bash scripts/setup_env.sh [--venv DIR] [--fresh]

Creates a Python virtual environment (default: .venv in the project root) and runs
`pip install -e '.[test]'` in it. Re-running skips the install when setup.py has not changed.
  --venv DIR   where the environment lives (default: .venv, or $FAIRSEQ_ADMIN_VENV)
  --fresh      delete the environment first and build it again from nothing
USAGE
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${FAIRSEQ_ADMIN_VENV:-$root/.venv}
fresh=0
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv=$2; shift 2 ;;
    --fresh) fresh=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup_env.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
if [ "$fresh" = 1 ] && [ -d "$venv" ]; then
  echo "[setup_env] removing $venv (--fresh)"
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup_env] creating virtual environment $venv with $($python --version)"
  "$python" -m venv "$venv"
fi
stamp="$venv/.fairseq_admin-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt "$root/setup.py" ]; then
  echo "[setup_env] $venv is up to date with setup.py"
else
  echo "[setup_env] installing fairseq_admin and its pinned dependencies into $venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e "$root[test]"
  touch "$stamp"
fi
