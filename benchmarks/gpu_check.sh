#!/usr/bin/env bash
# What the CPU cannot measure, in one short slot on one CUDA device (benchmarks/gpu_check.py).
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bash benchmarks/gpu_check.sh [--budget-min 9] [--smoke] [--out DIR] [--schemes a,b] [--work DIR]
                                    [--raw-dir DIR] [--render FILE.json] [-h|--help]

On one CUDA device, within --budget-min wall-clock minutes (default 9), measures and writes one JSON and one
Markdown table (DIR/gpu-check-<UTC time>.json and .md; rewritten after every unit, so a run cut short still leaves
its partial result; a re-run writes new files beside the old ones):
  1. training throughput (target tokens/s) and peak GPU memory of every scheme against fairseq's own transformer
     of the same dimensions (transformer_wmt_en_de: d=512, FFN 2048, 8 heads), alternating in one process as
     benchmarks/cost.py does: 6-6 and 18-18, batches of ~8k and ~32k tokens, under --fp16, --bf16 and float32
  2. beam-4 generation throughput (sentences/s) of the same models
  3. Admin's profiling under fp16/bf16 (omega float32 afterwards; its cost in training steps), and every scheme
     training 50 updates at 18-18 under --fp16 (and --bf16): finite losses, stable loss scale
  4. with the time left: an 18-18 race on Multi30k (d=512, every scheme, the same updates each), validation loss
     and sacreBLEU on test_2016_flickr
Steps or units that do not fit the budget are listed as skipped, with the reason. Exit status 1 if a unit failed.

  --budget-min M   wall-clock minutes for everything, start-up included (default 9; --smoke: 4)
  --smoke          the same code on the CPU, tiny dimensions, about a minute: float32 and bf16 measured, fp16
                   listed as skipped (fairseq's --fp16 trainer needs CUDA); no GPU figures
  --out DIR        where the results land (default benchmarks/results/gpu/; --smoke: benchmarks/results/tmp/)
  --schemes a,b    a subset of fairseq_admin.schemes.SCHEMES (default: all)
  --work DIR       Multi30k is prepared once into DIR/data (default benchmarks/work) from --raw-dir
                   (default ../shared/data/multi30k) with data-prep/prepare-multi30k.sh
  --render FILE    print the Markdown of an existing result JSON
Needs: the CUDA build of the pinned torch, e.g.
  pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128   (before bash scripts/setup_env.sh)
Environment: PYTHON (default: the project's .venv/bin/python, else python3).
USAGE
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/benchmarks/python.sh"  # PYTHON, and its bin/ first on PATH
for a in "$@"; do
  case "$a" in -h|--help) usage; exit 0 ;; esac
done
echo "[gpu_check.sh] $PYTHON benchmarks/gpu_check.py $*  (training/generation throughput, memory, Admin profiling," \
     "fp16/bf16 stability, Multi30k race; results in the --out directory)"
exec "$PYTHON" "$root/benchmarks/gpu_check.py" "$@"
