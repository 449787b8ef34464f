#!/usr/bin/env bash
# The quick start: a deep Admin Transformer trained and evaluated on real data (Multi30k En-De), on a CPU.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bash scripts/quickstart.sh [--raw-dir DIR | --data DIR] [--out DIR] [--layers N-M] [--scheme S]
                                  [--max-update N] [--stop-minutes M] [--lr LR] [--warmup N] [--max-tokens N]
                                  [--threads N] [--compare-postln] [--no-eval] [--generate-args 'ARGS']
                                  [--print-train-command] [-- FAIRSEQ_TRAIN_ARGS...]

Runs the whole pipeline on Multi30k En-De (29k training pairs), on the CPU: 30 minutes of training, plus a few
minutes of set-up, data preparation and evaluation:
  1. sets up .venv (scripts/setup_env.sh); fairseq-admin-quickstart (pip-installed) uses its own environment
  2. prepares the data (data-prep/prepare-multi30k.sh: download or --raw-dir, sentencepiece 8k, fairseq-preprocess)
  3. trains an 18-3 layer Admin Transformer (18-layer encoder, 3-layer decoder; d=128, ffn 512, 4 heads; lr 1e-3,
     3500 tokens per batch) for 30 minutes with fairseq-train --task translation, printing a progress line
     (updates/s, time left) every 25 updates; Admin's omega is profiled by the model on the first batch and written
     to OUT/checkpoints/<scheme>_<layers>/profile.ratio.init
  4. evaluates (scripts/evaluate.sh --choose-on-valid), beam 4: translates the validation set (1014 sentences) with
     checkpoint_best.pt and with the last 3 interval checkpoints averaged, once each, scores lenpen 0.6, 1.0 and 1.5
     of each, prints this grid (validation sacreBLEU and length ratio) and takes its best cell (ties: checkpoint_best.pt
     first, then the lower lenpen); only then translates test_2016_flickr, once, with that choice: sacreBLEU and
     tokenized BLEU. The test set is never used to choose.
  5. with --compare-postln: the same depth as plain Post-LN under the same recipe, trained and evaluated the same way
     (its own choice, on its own validation translations)
  6. prints test sentences (source, reference, each model's translation), the BLEU with its signature, where the
     files are, and writes OUT/curves-<layers>.png: training and validation loss of each run
Every step is skipped or resumed when re-run: an interrupted training run continues from its last checkpoint, and
a finished one (checkpoint_last.pt at --max-update updates, or past --stop-minutes) is not trained further.

  --raw-dir DIR      read Multi30k from DIR (train/val/test_2016_flickr .en/.de) instead of downloading it,
                     e.g. --raw-dir ../shared/data/multi30k
  --data DIR         use DIR as prepared by data-prep/prepare-multi30k.sh (skips step 2)
  --out DIR          where data, checkpoints and results go (default: quickstart/ beside scripts/;
                     fairseq-admin-quickstart: ./quickstart)
  --layers N-M       encoder-decoder depth (default 18-3: a deep encoder, a shallow decoder)
  --scheme S         residual scheme: admin (default), b2t, deepnorm, preln, postln
  --stop-minutes M   train for M minutes (fairseq's --stop-time-hours, counted across resumes; default 30; 0: no
                     time limit)
  --max-update N     stop after N updates, or at M minutes if that comes first (default 0: no update limit)
  --lr LR            peak learning rate (default 1e-3; inverse square root schedule)
  --warmup N         warm-up updates (default 200)
  --max-tokens N     tokens per batch (default 3500)
  --threads N        torch CPU threads (default: the number of cores)
  --compare-postln   also train and evaluate Post-LN at the same depth (about as long again)
  --no-eval          stop after training (benchmarks/quickstart_search.py: the search never reads the test set)
  --generate-args A  more fairseq-generate options for the evaluation, e.g. '--max-len-b 20' (scripts/evaluate.sh;
                     not --beam, --lenpen or --nbest: the validation set chooses the length penalty)
  --print-train-command
                     print the main run's training command (OMP_NUM_THREADS=N fairseq-train ...: the options above
                     and -- ARGS applied, data OUT/data/data-bin or --data's, checkpoints in
                     OUT/checkpoints/<scheme>_<layers>) and exit: nothing is set up, prepared, created or trained.
                     fairseq_admin/configs/quickstart_admin_18-3.yaml is this command with the defaults, for
                     fairseq-hydra-train (python -m fairseq_admin.recipe_configs)
  -- ARGS            passed to fairseq-train as they are, e.g. -- --admin-init 'O(logn)'
USAGE
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# a repository checkout has fairseq_admin/ beside scripts/; an installed copy lies in fairseq_admin/shipped/
if [ -d "$root/fairseq_admin" ]; then user_dir=$root/fairseq_admin; else user_dir=$(cd "$root/.." && pwd); fi
# fairseq-admin-quickstart (fairseq_admin/cli/shipped.py) names its Python: that environment, no .venv, output in ./
installed_python=${FAIRSEQ_ADMIN_PYTHON:-}
if [ -n "$installed_python" ]; then out=$PWD/quickstart; else out=$root/quickstart; fi
raw_args=()
data=
layers=18-3
scheme=admin
max_update=0
stop_minutes=30
lr=1e-3
warmup=200
max_tokens=3500
threads=$(nproc 2>/dev/null || echo 2)
compare=0
evaluate=1
generate_args=
print_command=0
extra=()
need() { if [ $# -lt 2 ] || [ -z "$2" ]; then echo "quickstart.sh: $1 needs a value" >&2; exit 2; fi; }
while [ $# -gt 0 ]; do
  case "$1" in
    --raw-dir) need "$@"; raw_args=(--raw-dir "$(cd "$2" && pwd)"); shift 2 ;;
    --data) need "$@"; data=$(cd "$2" && pwd); shift 2 ;;
    --out) need "$@"; out=$2; shift 2 ;;
    --layers) need "$@"; layers=$2; shift 2 ;;
    --scheme) need "$@"; scheme=$2; shift 2 ;;
    --max-update) need "$@"; max_update=$2; shift 2 ;;
    --stop-minutes) need "$@"; stop_minutes=$2; shift 2 ;;
    --lr) need "$@"; lr=$2; shift 2 ;;
    --warmup) need "$@"; warmup=$2; shift 2 ;;
    --max-tokens) need "$@"; max_tokens=$2; shift 2 ;;
    --threads) need "$@"; threads=$2; shift 2 ;;
    --compare-postln) compare=1; shift ;;
    --no-eval) evaluate=0; shift ;;
    --generate-args) need "$@"; generate_args=$2; shift 2 ;;
    --print-train-command) print_command=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "quickstart.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
bad() { echo "quickstart.sh: $*" >&2; exit 2; }
[[ $layers =~ ^[1-9][0-9]*-[1-9][0-9]*$ ]] || bad "--layers must look like 18-18 (both depths >= 1), got '$layers'"
case "$scheme" in admin|b2t|deepnorm|preln|postln) ;; *) bad "--scheme must be admin, b2t, deepnorm, preln or postln, got '$scheme'" ;; esac
for name in max_update warmup max_tokens threads; do
  value=${!name}
  [[ $value =~ ^[0-9]+$ ]] || bad "--${name//_/-} must be a whole number, got '$value'"
done
[ "$max_update" -ge 1 ] || [ "$stop_minutes" != 0 ] || bad "--max-update 0 and --stop-minutes 0: give at least one limit"
[ "$max_tokens" -ge 1 ] && [ "$threads" -ge 1 ] || bad "--max-tokens and --threads must be at least 1"
[[ $stop_minutes =~ ^[0-9]+([.][0-9]+)?$ ]] || bad "--stop-minutes must be a number of minutes, got '$stop_minutes'"
# a decimal number (one point at most) above 0: '1.2.3' and '0' reach fairseq-train otherwise (a crash, or no training)
if ! [[ $lr =~ ^([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$ ]] || ! awk -v x="$lr" 'BEGIN { exit !(x + 0 > 0) }'
then bad "--lr must be a positive number such as 1e-3, got '$lr'"; fi
# options that evaluate.sh --choose-on-valid refuses (fairseq_admin/cli/evaluate.py, _GRID_CONFLICTS): refused here,
# before the training rather than after it
grid_conflicts='--beam|--lenpen|--nbest|--unnormalized|--sampling|--diverse-beam-groups|--diversity-rate'
grid_conflicts+='|--match-source-len|--prefix-size'
if [[ " $generate_args" =~ [[:space:]]($grid_conflicts)([[:space:]=]|$) ]]; then
  bad "--generate-args ${BASH_REMATCH[1]}: the evaluation chooses the length penalty on the validation set" \
    "(beam 4, one n-best list per checkpoint choice)"
fi
if [ -n "$data" ] && [ ${#raw_args[@]} -gt 0 ]; then bad "--data and --raw-dir exclude each other"; fi
if [ -n "$data" ] && [ ! -f "$data/data-bin/dict.en.txt" ]; then bad "$data has no data-bin/dict.en.txt (prepare it with data-prep/prepare-multi30k.sh)"; fi
if [ -n "$data" ] && [ "$evaluate" = 1 ] && [ "$print_command" = 0 ]; then
  for f in spm.model valid.raw.de test.raw.de; do
    [ -f "$data/$f" ] || bad "$data has no $f, which the evaluation reads (prepare it with data-prep/prepare-multi30k.sh, or --no-eval)"
  done
fi
if [ "$compare" = 1 ] && [ "$scheme" = postln ]; then bad "--compare-postln compares another scheme with Post-LN; --scheme is postln"; fi
enc_layers=${layers%-*}
dec_layers=${layers#*-}
# --stop-minutes may be fractional (checked above): seconds for the "already finished" check, hours for fairseq
# (the shortest of 15-17 digits that gives the same number back, as Python's repr)
read -r stop_seconds stop_hours < <(awk -v m="$stop_minutes" 'BEGIN { h = m / 60
  for (p = 15; p <= 17; p++) { s = sprintf("%." p "g", h); if (s + 0 == h) break }; print int(m * 60), s }')

# train_command SCHEME: the fairseq-train command of SCHEME_LAYERS into the array cmd, its checkpoints in save
train_command() {
  save=$out/checkpoints/$1_$layers
  cmd=(fairseq-train "$data/data-bin" --user-dir "$user_dir" --task translation
    --arch "$1_transformer" --encoder-layers "$enc_layers" --decoder-layers "$dec_layers"
    --encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512
    --encoder-attention-heads 4 --decoder-attention-heads 4 --share-all-embeddings
    --optimizer adam --adam-betas "(0.9, 0.98)" --lr "$lr" --lr-scheduler inverse_sqrt --warmup-updates "$warmup"
    --warmup-init-lr 1e-7 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --dropout 0.1
    --max-tokens "$max_tokens" --max-update "$max_update" --seed 1 --cpu --num-workers 0
    --save-dir "$save" --save-interval-updates 100 --keep-interval-updates 3 --no-epoch-checkpoints
    --log-format simple --log-interval 25)
  if [ "$stop_seconds" -gt 0 ]; then cmd+=(--stop-time-hours "$stop_hours"); fi
  if [ "$1" = admin ]; then cmd+=(--admin-profile-save "$save/profile.ratio.init"); fi
  if [ "$1" = "$scheme" ]; then cmd+=("${extra[@]}"); fi  # -- ARGS belong to the main run (a scheme's own options)
}

if [ "$print_command" = 1 ]; then  # OUT as given, made absolute without creating it; the data where step 2 puts it
  case $out in /*) ;; *) out=$PWD/$out ;; esac
  data=${data:-$out/data}
  train_command "$scheme"
  printf 'OMP_NUM_THREADS=%q' "$threads"; printf ' %q' "${cmd[@]}"; echo
  exit 0
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
start=$(date +%s)
step() { echo; echo "=== [quickstart $(( ($(date +%s) - start) / 60 )) min] $*"; }
export OMP_NUM_THREADS=$threads

step "environment"
if [ -n "$installed_python" ]; then
  echo "the environment of fairseq-admin-quickstart: $installed_python"
  py=$installed_python
  export PATH="$(dirname "$py"):$PATH" PYTHON="$py"
else
  bash "$root/scripts/setup_env.sh"
  venv=${FAIRSEQ_ADMIN_VENV:-$root/.venv}
  export PATH="$venv/bin:$PATH"
  py=$venv/bin/python
fi

if [ -z "$data" ]; then
  data=$out/data
  step "data: Multi30k En-De -> $data"
  bash "$root/data-prep/prepare-multi30k.sh" --out "$data" "${raw_args[@]}" --vocab-size 8000
fi

# train SCHEME: fairseq-train (train_command) into OUT/checkpoints/SCHEME_LAYERS, its log in OUT/train-SCHEME_LAYERS.log
train() {
  local save cmd log=$out/train-$1_$layers.log
  train_command "$1"
  step "training a $layers layer $1 Transformer on the CPU ($threads threads) -> $save"
  # fairseq-train, re-run on a finished save dir, trains one more update and overwrites checkpoint_best/last: look first
  local done_updates=0 done_seconds=0
  if [ -f "$save/checkpoint_last.pt" ]; then
    read -r done_updates done_seconds < <("$py" - "$save/checkpoint_last.pt" <<'PY' 2>/dev/null || echo "0 0"
import sys
from fairseq_admin.checkpoint_safety import load_checkpoint
state = load_checkpoint(sys.argv[1])
print(int(state["optimizer_history"][-1]["num_updates"]),
      int(state.get("extra_state", {}).get("previous_training_time", 0)))
PY
)
  fi
  if { [ "$max_update" -gt 0 ] && [ "$done_updates" -ge "$max_update" ]; } ||
     { [ "$stop_seconds" -gt 0 ] && [ "$done_seconds" -ge "$stop_seconds" ]; }; then
    echo "training already finished: $save/checkpoint_last.pt is at $done_updates updates after $done_seconds s" \
      "(--max-update $max_update, --stop-minutes $stop_minutes); not training further"
    return
  fi
  printf '%q ' "${cmd[@]}" | tee -a "$log"; echo | tee -a "$log"
  "${cmd[@]}" 2>&1 | tee -a "$log" | "$py" -m fairseq_admin.cli.quickstart progress --max-update "$max_update" \
    --stop-minutes "$stop_minutes"
}

# evaluate SCHEME: test_2016_flickr BLEU of SCHEME_LAYERS into OUT/results-SCHEME_LAYERS.json, with the checkpoints
# and length penalty that SCHEME_LAYERS's own validation translations choose (evaluate.sh --choose-on-valid), among
# checkpoint_best.pt and the last 3 interval checkpoints averaged x lenpen 0.6, 1.0, 1.5, beam 4. No setting carries
# over from another model: lenpen 1.5, best for the search's trial, cost another run 3.4 BLEU (issue 32).
evaluate() {
  local save=$out/checkpoints/$1_$layers average=3 found
  step "evaluation of $1_$layers: chosen on the validation set, then test_2016_flickr"
  found=$(find "$save" -maxdepth 1 -name 'checkpoint_[0-9]*_[0-9]*.pt' | wc -l)
  if [ "$found" -lt "$average" ]; then  # a run shorter than 3 x 100 updates
    echo "only $found interval checkpoints in $save: the grid has checkpoint_best.pt alone"
    average=1
  fi
  bash "$root/scripts/evaluate.sh" --pair en-de --checkpoints "$save" --data "$data/data-bin" \
    --spm "$data/spm.model" --ref "$data/test.raw.de" --num-checkpoints "$average" --average-by update \
    --choose-on-valid --valid-ref "$data/valid.raw.de" --grid-lenpens 0.6,1.0,1.5 \
    --beam 4 --user-dir "$user_dir" --cpu --out "$out/results-$1_$layers.json" \
    ${generate_args:+--generate-args "$generate_args"}
}

schemes=("$scheme")
if [ "$compare" = 1 ]; then schemes+=(postln); fi
for s in "${schemes[@]}"; do
  train "$s"
  if [ "$evaluate" = 1 ]; then evaluate "$s"; fi
done
if [ "$evaluate" = 0 ]; then
  step "done in $(( ($(date +%s) - start) / 60 )) minutes (--no-eval: not evaluated)"
  exit 0
fi

step "done in $(( ($(date +%s) - start) / 60 )) minutes"
runs=()
for s in "${schemes[@]}"; do runs+=(--run "$s $layers=$out/train-${s}_$layers.log=$out/results-${s}_$layers.json"); done
"$py" -m fairseq_admin.cli.quickstart report "${runs[@]}" --source "$data/test.raw.en" \
  --reference "$data/test.raw.de" --png "$out/curves-$layers.png" \
  --title "Multi30k En-De, $layers layers (encoder-decoder), d=128, lr $lr, warm-up $warmup, $max_tokens tokens/batch"
echo
echo "  data:          $data (data-bin, spm.model, test.raw.de)"
for s in "${schemes[@]}"; do
  echo "  $s:"
  echo "    checkpoints:  $out/checkpoints/${s}_$layers$([ "$s" = admin ] && echo " (profile.ratio.init: Admin's profiled omega)")"
  echo "    training log: $out/train-${s}_$layers.log"
  echo "    results:      $out/results-${s}_$layers.json (translations: $out/results-${s}_$layers.hyp.detok.de)"
done
echo "  curves:        $out/curves-$layers.png"
