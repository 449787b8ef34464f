#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment with the exact tested versions (constraints.txt) and
# installs fairseq_admin into it. Safe to re-run: an environment already up to date is left alone.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bash scripts/setup_env.sh [--venv DIR] [--fresh]

Creates a Python virtual environment (default: .venv in the project root) and installs, pinned by constraints.txt:
  1. pip, then torch (first, so that pip never resolves an unpinned torch: a plain `torch` would be a multi-GB
     CUDA build where torch 2.13.0's CPU wheel is the one available);
  2. pip install -c constraints.txt -e '.[fairseq,plots,tensorboard,deploy,test]'
Re-running skips the install while setup.py and constraints.txt are unchanged (their checksums are in the stamp).
  --venv DIR   where the environment lives (default: .venv, or $FAIRSEQ_ADMIN_VENV)
  --fresh      delete the environment first and build it again from nothing
USAGE
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${FAIRSEQ_ADMIN_VENV:-$root/.venv}
fresh=0
while [ $# -gt 0 ]; do
  case "$1" in
    --venv)
      if [ $# -lt 2 ] || [ -z "$2" ]; then echo "setup_env.sh: --venv needs a directory" >&2; exit 2; fi
      venv=$2; shift 2 ;;
    --fresh) fresh=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup_env.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

constraints=$root/constraints.txt
extras=fairseq,plots,tensorboard,deploy,test
python=${PYTHON:-python3}
if [ ! -f "$constraints" ]; then echo "setup_env.sh: $constraints is missing" >&2; exit 2; fi
if [ "$fresh" = 1 ] && [ -d "$venv" ]; then
  echo "[setup_env] removing $venv (--fresh)"
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup_env] creating virtual environment $venv with $($python --version)"
  "$python" -m venv "$venv"
fi
stamp="$venv/.fairseq_admin-installed"
wanted=$(cd "$root" && sha256sum setup.py constraints.txt && echo "extras $extras")
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  echo "[setup_env] $venv is up to date with setup.py and constraints.txt"
  exit 0
fi
pip=("$venv/bin/python" -m pip install --quiet -c "$constraints")
echo "[setup_env] installing pip and torch as pinned in constraints.txt into $venv"
"${pip[@]}" pip torch
echo "[setup_env] installing fairseq_admin[$extras] with the pinned versions"
"${pip[@]}" -e "$root[$extras]"
printf '%s\n' "$wanted" > "$stamp"
