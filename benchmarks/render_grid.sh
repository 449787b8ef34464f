#!/usr/bin/env bash
# Renders the depth/stability grid from its result files only: a markdown table and PNG validation/training curves.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bash benchmarks/render_grid.sh [--results DIR] [-h|--help]

Reads RESULTS/*_seed*.json (default benchmarks/results/grid, written by benchmarks/run_grid.sh), prints a markdown
table (regime, layers, scheme, seed, updates, final / best valid loss, divergence, stall near the unigram level,
sacreBLEU on test_2016_flickr, training minutes, machine load) and writes RESULTS/TABLE.md and one PNG per
(regime, layers): RESULTS/<regime>_<layers>.png with the validation and training loss curves of every scheme.
With --results benchmarks/results/grid-1000 it then regenerates docs/choosing.md's table and docs/choosing-18-18.png
from the same cells (benchmarks/choosing.py).
Nothing is trained or decoded; it runs in seconds and can run while the grid is still training.
Environment: PYTHON (default: the project's .venv/bin/python, else python3; needs matplotlib).
USAGE
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/benchmarks/python.sh"  # PYTHON, and its bin/ first on PATH
args=()
results="$root/benchmarks/results/grid"
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --results) [ $# -ge 2 ] || { echo "render_grid.sh: --results needs a value" >&2; exit 2; }; args+=("$1" "$2"); results=$2; shift 2 ;;
    *) echo "render_grid.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
"$PYTHON" "$root/benchmarks/depth_grid.py" --render ${args[@]+"${args[@]}"}
# docs/choosing.md is generated from grid-1000's cells: the same cells, so the page follows the table
if [ -d "$results" ] && [ "$(cd "$results" 2>/dev/null && pwd -P)" = "$(cd "$root/benchmarks/results/grid-1000" 2>/dev/null && pwd -P)" ]; then
  "$PYTHON" "$root/benchmarks/choosing.py" --results "$results"
fi
