#!/usr/bin/env bash
# Stability diagnostics at the wmt_en_de dimensions (512/2048/8 heads), 6/12/18 layers, every registered scheme.
set -euo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  cat <<'USAGE'
usage: benchmarks/diagnose_wmt_en_de.sh [extra fairseq-admin-diagnose arguments]

Runs fairseq-admin-diagnose for every scheme in fairseq_admin.schemes.SCHEMES (postln, preln, admin, b2t, and
deepnorm when present) at the transformer_wmt_en_de dimensions (512/2048/8 heads), 6/12/18 encoder = decoder layers,
on one synthetic batch (8 sentences of up to 20 tokens, vocabulary 1000, seed 1), dropout off for the measurements
(Admin is profiled with the arch's dropout, as in training). Writes benchmarks/results/diagnostics/diagnostics.json,
PNG plots (grad_norms, last_ffn_grad, output_change, beta, omega) and table.txt. A few minutes on 2 CPU cores.
USAGE
  exit 0
fi
cd "$(dirname "$0")/.."
OUT=benchmarks/results/diagnostics
SCHEMES=$(python -c "import fairseq_admin.schemes as s; print(','.join(s.SCHEMES))" 2>/dev/null | tail -1)
mkdir -p "$OUT"
# The table goes to a temporary file that becomes table.txt only when the run succeeds: a refused argument or a failed
# run leaves the committed table as it was, and its error stays on stderr. fairseq-admin-diagnose checks every
# argument before any work and writes diagnostics.json and the PNGs atomically at the end.
table=$(mktemp "$OUT/.table.txt.XXXXXX")
trap 'rm -f "$table"' EXIT
echo "[diagnose_wmt_en_de] schemes $SCHEMES; layers 6,12,18; 512/2048/8 heads; synthetic batch 8x20; -> $OUT"
fairseq-admin-diagnose --arch transformer_wmt_en_de --schemes "$SCHEMES" --layers 6,12,18 \
  --synthetic-batch --batch-size 8 --src-len 20 --tgt-len 20 --vocab-size 1000 --draws 3 --perturbation 0.01 \
  --seed 1 --threads 2 --out-json "$OUT/diagnostics.json" --plot-dir "$OUT" "$@" | tee "$table"
chmod a+r "$table"  # mktemp's 0600 -> readable as the committed file is
mv "$table" "$OUT/table.txt"
echo "[diagnose_wmt_en_de] done: $(ls "$OUT" | tr '\n' ' ')"
