#!/usr/bin/env bash
# Cost of the plugin against vanilla fairseq: training / generation throughput ratios, peak memory, Admin's profiling.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bash benchmarks/cost.sh [--smoke] [--layers 6-6,18-18] [--schemes a,b] [--rounds 7] [--warmup 2]
                               [--batches 2] [--gen-sentences 64] [--threads 1] [--skip train,generate,memory,profile]
                               [--scheme-args="OPTIONS"] [--data-bin DIR] [--work DIR] [--out FILE.json]
                               [--render FILE.json] [-h|--help]

Every scheme of fairseq_admin.schemes.SCHEMES (--arch <scheme>_transformer) against fairseq's own --arch transformer
of identical dimensions (d=128, ffn 512, 4 heads; Pre-LN against fairseq's --encoder/decoder-normalize-before),
measured in ONE process, the two models alternating (V S V S ... S V) on the same fixed real Multi30k batches,
warm-up rounds dropped, median and [min, max] of the per-round ratio scheme / vanilla:
  * training throughput: fairseq.trainer.Trainer.train_step (criterion, backward, Adam), target tokens/s
  * generation throughput: SequenceGenerator beam 4 via task.inference_step, pinned output length, sentences/s
  * peak memory: peak RSS increase over 3 training steps, fresh subprocess per model
  * Admin's profiling (fairseq_admin.profiling.profile_model) relative to one training step
Both wall-clock and CPU-time (1 thread) ratios are reported, with the machine's load (uptime) next to them.
Writes benchmarks/results/cost-<UTC time>.json and .md (--smoke: benchmarks/results/tmp/, git-ignored).
Multi30k is prepared into WORK/data (default benchmarks/work) from ../shared/data/multi30k if --data-bin is absent.

  --smoke          1-1 layers, 1-2 schemes, 2 rounds, 1 memory step: checks the whole code path in a few minutes
  --render FILE    print the markdown tables of an existing result JSON
  --schemes vanilla   the A/A control: a second vanilla model against the first (the method's own bias and noise)
  --scheme-args="--admin-omega scalar"   extra fairseq options for the scheme models (to find where time goes)
All other options are passed to benchmarks/cost.py (see: python benchmarks/cost.py --help).
Environment: PYTHON (default: the project's .venv/bin/python, else python3).
USAGE
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/benchmarks/python.sh"  # PYTHON, and its bin/ first on PATH
for a in "$@"; do
  case "$a" in -h|--help) usage; exit 0 ;; esac
done
exec "$PYTHON" "$root/benchmarks/cost.py" "$@"
