#!/usr/bin/env bash
# Runs the depth/stability grid (benchmarks/depth_grid.py): one fairseq-train + BLEU per cell, resumable.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bash benchmarks/run_grid.sh [--schemes a,b] [--layers 18-18,6-6] [--regimes standard,aggressive]
                                   [--seeds 1] [--cells LIST] [--max-update 300] [--stop-after HH:MM] [--work DIR]
                                   [--results DIR] [--raw-dir DIR] [--threads N] [--background LOG] [--keep-checkpoints]
                                   [--dry-run] [-h|--help]

Multi30k En-De (train / val / test_2016_flickr from ../shared/data/multi30k, sentencepiece 8k prepared into
WORK/data), d=128 / ffn 512 / 4 heads, Adam (0.9, 0.98), ~3.5k target tokens per update, dropout 0.1,
label smoothing 0.1, every scheme of fairseq_admin.schemes.SCHEMES (default order postln, admin, preln, b2t, deepnorm).
Regimes: standard   = lr 1e-3, inverse_sqrt, 200 warm-up updates (where vanilla 18-18 Post-LN stalled)
         aggressive = lr 2e-3 constant, no warm-up
Each cell: fairseq-train --task admin_translation --arch <scheme>_transformer (validation + checkpoint every 50
updates; --log-stability every 10), then beam 4 / lenpen 0.6 on test_2016_flickr from checkpoint_best.pt,
sentencepiece decoding, sacreBLEU; result in
RESULTS/<regime>_<scheme>_<layers>_seed<k>.json (default RESULTS = benchmarks/results/grid).
Re-running skips finished cells and resumes an interrupted one from its checkpoint_last.pt. One grid at a time
(lock file in WORK). Cells run deepest first, each scheme's regimes together.

  --schemes, --layers, --regimes, --seeds   comma-separated filters
  --cells C1,C2,...   explicit cells in run order, e.g. aggressive_preln_18-18_seed1,standard_b2t_18-18_seed1;
                      the scheme place also takes a variant of benchmarks/depth_grid.py's VARIANTS (below)
  --max-update N      update budget per cell (default 300)
  --stop-after HH:MM  UTC; start no new cell after this time (a running one finishes)
  --work DIR          data, checkpoints, logs (default benchmarks/work; keep it out of git)
  --threads N         torch threads per training (default 0: 2 on free cores, else 1, re-chosen at each
                      checkpoint); use 1 for two grids side by side on 2 cores
  --background LOG    detach (nohup) and write the output to LOG; prints the process id
  --keep-checkpoints  keep each finished cell's checkpoints: a later run with a larger --max-update and another
                      --results directory continues the cell from its checkpoint_last.pt
  --dry-run           print the cells, whether each would start / resume / be skipped, and the commands
Render the results with: bash benchmarks/render_grid.sh
Environment: PYTHON (default: the project's .venv/bin/python, else python3).
USAGE
  # The variants as depth_grid.py defines them (importing it is cheap: no fairseq, no torch)
  "$PYTHON" -c 'import sys; sys.path.insert(0, sys.argv[1]); import depth_grid; print(depth_grid.variants_help())' \
    "$root/benchmarks"
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/benchmarks/python.sh"  # PYTHON, and its bin/ first on PATH
args=()
background=
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --background) background=$2; shift 2 ;;
    --dry-run|--keep-checkpoints) args+=("$1"); shift ;;
    --schemes|--layers|--regimes|--seeds|--cells|--max-update|--stop-after|--work|--results|--raw-dir|--threads)
      [ $# -ge 2 ] || { echo "run_grid.sh: $1 needs a value" >&2; exit 2; }
      args+=("$1" "$2"); shift 2 ;;
    *) echo "run_grid.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
cmd=("$PYTHON" "$root/benchmarks/depth_grid.py" ${args[@]+"${args[@]}"})
if [ -n "$background" ]; then
  mkdir -p "$(dirname "$background")"
  nohup "${cmd[@]}" >>"$background" 2>&1 </dev/null &
  echo "run_grid.sh: started in the background, pid $!, log $background"
  exit 0
fi
exec "${cmd[@]}"
