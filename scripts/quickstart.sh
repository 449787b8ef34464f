#!/usr/bin/env bash
# The quick start: a deep Admin Transformer trained and evaluated on real data (Multi30k En-De), on a CPU.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bash scripts/quickstart.sh [--raw-dir DIR] [--out DIR] [--layers N-M] [--max-update N] [--scheme S]

Runs the whole pipeline on Multi30k En-De (29k training pairs), on the CPU, in about half an hour on 2 cores:
  1. sets up .venv (scripts/setup_env.sh)
  2. prepares the data (data-prep/prepare-multi30k.sh: download or --raw-dir, sentencepiece 8k, fairseq-preprocess)
  3. trains an 18-6 layer Admin Transformer (18-layer encoder, 6-layer decoder; d=128, ffn 512, 4 heads) with
     fairseq-train --task translation; Admin's ω is profiled by the model on the first batch and written to
     OUT/checkpoints/<scheme>_<layers>/profile.ratio.init
  4. evaluates (scripts/evaluate.sh): averages the last 3 checkpoints (every 100 updates), beam 4, sacreBLEU and
     tokenized BLEU on test_2016_flickr
  5. prints the BLEU scores and where everything was written
Every step is skipped or resumed when re-run: an interrupted training run continues from its last checkpoint, and
a finished one (checkpoint_last.pt at --max-update updates) is not trained further: the re-run goes straight to
evaluation.

  --raw-dir DIR    read Multi30k from DIR (train/val/test_2016_flickr .en/.de) instead of downloading it,
                   e.g. --raw-dir ../shared/data/multi30k
  --out DIR        where data, checkpoints and results go (default: quickstart/)
  --layers N-M     encoder-decoder depth (default 18-6: a deep encoder, a shallow decoder; 18-18 trains ~1.7x
                   slower per update)
  --max-update N   training updates (default 1000, ~3k target tokens each, ~6.5 epochs)
  --scheme S       residual scheme: admin (default), postln, preln, b2t (for comparison)
USAGE
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$root/quickstart
raw_args=()
layers=18-6
max_update=1000
scheme=admin
while [ $# -gt 0 ]; do
  case "$1" in
    --raw-dir) raw_args=(--raw-dir "$(cd "$2" && pwd)"); shift 2 ;;
    --out) out=$2; shift 2 ;;
    --layers) layers=$2; shift 2 ;;
    --max-update) max_update=$2; shift 2 ;;
    --scheme) scheme=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "quickstart.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
if ! [[ $layers =~ ^[1-9][0-9]*-[1-9][0-9]*$ ]]; then
  echo "quickstart.sh: --layers must look like 18-18 (both depths >= 1), got '$layers'" >&2; exit 2
fi
if ! [[ $max_update =~ ^[0-9]+$ ]] || [ "$max_update" -lt 1 ]; then echo "quickstart.sh: --max-update must be a positive integer" >&2; exit 2; fi
enc_layers=${layers%-*}
dec_layers=${layers#*-}
mkdir -p "$out"
out=$(cd "$out" && pwd)
start=$(date +%s)
step() { echo; echo "=== [quickstart $(( ($(date +%s) - start) / 60 )) min] $*"; }

step "1/5 environment"
bash "$root/scripts/setup_env.sh"
venv=${FAIRSEQ_ADMIN_VENV:-$root/.venv}
export PATH="$venv/bin:$PATH"

step "2/5 data: Multi30k En-De -> $out/data"
bash "$root/data-prep/prepare-multi30k.sh" --out "$out/data" "${raw_args[@]}" --vocab-size 8000

save=$out/checkpoints/${scheme}_${layers}
step "3/5 training a $layers layer $scheme Transformer on the CPU -> $save"
train=(fairseq-train "$out/data/data-bin" --user-dir "$root/fairseq_admin" --task translation
  --arch "${scheme}_transformer" --encoder-layers "$enc_layers" --decoder-layers "$dec_layers"
  --encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512
  --encoder-attention-heads 4 --decoder-attention-heads 4 --share-all-embeddings
  --optimizer adam --adam-betas "(0.9, 0.98)" --lr 1e-3 --lr-scheduler inverse_sqrt --warmup-updates 200
  --warmup-init-lr 1e-7 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --dropout 0.1
  --max-tokens 3500 --max-update "$max_update" --seed 1 --cpu --num-workers 0
  --save-dir "$save" --save-interval-updates 100 --keep-interval-updates 3 --no-epoch-checkpoints
  --log-format simple --log-interval 25)
if [ "$scheme" = admin ]; then train+=(--admin-profile-save "$save/profile.ratio.init"); fi
# fairseq-train, re-run on a finished save dir, trains one more update and overwrites checkpoint_best/last: look first
done_updates=0
if [ -f "$save/checkpoint_last.pt" ]; then
  done_updates=$(python - "$save/checkpoint_last.pt" <<'PY' 2>/dev/null || echo 0
import sys
from fairseq_admin.checkpoint_safety import load_checkpoint
print(int(load_checkpoint(sys.argv[1])["optimizer_history"][-1]["num_updates"]))
PY
)
fi
if [ "$done_updates" -ge "$max_update" ]; then
  echo "training already finished: $save/checkpoint_last.pt is at $done_updates updates (--max-update $max_update);" \
    "not training further"
else
  printf '%q ' "${train[@]}"; echo
  "${train[@]}" 2>&1 | tee -a "$out/train-${scheme}_${layers}.log"
fi

step "4/5 evaluation on test_2016_flickr"
bash "$root/scripts/evaluate.sh" --pair en-de --checkpoints "$save" --data "$out/data/data-bin" \
  --spm "$out/data/spm.model" --ref "$out/data/test.raw.de" --num-checkpoints 3 --average-by update \
  --beam 4 --lenpen 0.6 --user-dir "$root/fairseq_admin" --cpu --out "$out/results-${scheme}_${layers}.json"

step "5/5 done in $(( ($(date +%s) - start) / 60 )) minutes"
python - "$out/results-${scheme}_${layers}.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({k: r[k] for k in r if "bleu" in k.lower()}, indent=2))
PY
cat <<DONE
  data:         $out/data (data-bin, spm.model, test.raw.de)
  checkpoints:  $save (profile.ratio.init: Admin's profiled omega)
  training log: $out/train-${scheme}_${layers}.log
  results:      $out/results-${scheme}_${layers}.json
DONE
