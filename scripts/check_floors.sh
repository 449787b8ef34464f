#!/usr/bin/env bash
# Checks the oldest numpy versions setup.py admits for real: a scratch environment per version, then train, resume,
# generate and export a tiny model in it. The result is recorded in docs/tools.md ("Dependency floors").
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bash scripts/check_floors.sh [--numpy V[,V...]] [--work DIR] [--fresh] [--help]

For each numpy version V (default 1.24.4,1.26.4: the last release of setup.py's floor numpy>=1.24, and the last
numpy 1.x), in WORK/numpy-V (default WORK: /tmp/fairseq_admin-floors):
  1. a fresh virtual environment (python3 -m venv) with torch as pinned in constraints.txt (torch 2.13.0: the only
     CPU build of torch pip can reach here; older torch on PyPI are CUDA builds that need the nvidia-* packages),
     numpy==V, and a wheel of this repository with its [fairseq] extra; everything else as pip resolves it for V
     (constraints.txt's other pins need numpy 2);
  2. outside the repository: a synthetic corpus (the target is the source reversed), fairseq-preprocess;
     fairseq-train --arch admin_transformer, 6 updates, --eval-bleu (numpy arrays in the checkpoint's metrics: the
     globals of checkpoint_safety.py's allow-list); resume to 10 updates; fairseq-generate; fairseq-admin-export, then
     fairseq-generate on the export without --user-dir.
Prints one line per version: "numpy V: ok" or where it failed (exit 1 if any failed).
  --numpy LIST   comma-separated numpy versions (each must have CPython 3.11 wheels)
  --work DIR     where the environments and runs go (default /tmp/fairseq_admin-floors)
  --fresh        rebuild the environments (otherwise one whose stamp matches is reused: safe to re-run)
Environment: PYTHON (default python3, CPython 3.11), OMP_NUM_THREADS (default 1).
USAGE
}

numpy_versions=1.24.4,1.26.4
work=/tmp/fairseq_admin-floors
fresh=0
while [ $# -gt 0 ]; do
  case "$1" in
    --numpy) [ $# -ge 2 ] && [ -n "$2" ] || { echo "check_floors.sh: error: --numpy needs a version list" >&2; exit 2; }
             numpy_versions=$2; shift 2 ;;
    --work) [ $# -ge 2 ] && [ -n "$2" ] || { echo "check_floors.sh: error: --work needs a directory" >&2; exit 2; }
            work=$2; shift 2 ;;
    --fresh) fresh=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "check_floors.sh: error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
IFS=, read -r -a versions <<< "$numpy_versions"
for v in "${versions[@]}"; do
  [[ $v =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "check_floors.sh: error: --numpy: '$v' is not a version like 1.24.4" >&2; exit 2; }
done
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
  { echo "check_floors.sh: error: $python is not CPython 3.11 (the pinned torch wheel's)" >&2; exit 2; }
torch_pin=$(grep -E '^torch==' "$root/constraints.txt") ||
  { echo "check_floors.sh: error: no torch== pin in $root/constraints.txt" >&2; exit 2; }
torchaudio_pin=$(grep -E '^torchaudio==' "$root/constraints.txt") ||
  { echo "check_floors.sh: error: no torchaudio== pin in $root/constraints.txt" >&2; exit 2; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$work"
work=$(cd "$work" && pwd)

echo "[check_floors] building the wheel of $root"
rm -rf "$work/wheel"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/wheel" "$root"
wheel=$(ls "$work"/wheel/fairseq_admin-*.whl)

# the tiny run, inside environment $1 (its bin/ first on PATH), in folder $2
tiny_run() {
  local bin=$1 run=$2
  rm -rf "$run" && mkdir -p "$run" && cd "$run"
  "$bin/python" - <<'PY' || { echo "writing the corpus"; return 1; }
import random
rng = random.Random(0)
words = [f"w{i}" for i in range(24)]
for split, n in (("train", 400), ("valid", 40), ("test", 30)):
    src = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(n)]
    open(f"{split}.src", "w").write("".join(s + "\n" for s in src))
    open(f"{split}.tgt", "w").write("".join(" ".join(reversed(s.split())) + "\n" for s in src))
PY
  "$bin/fairseq-preprocess" --source-lang src --target-lang tgt --trainpref train --validpref valid --testpref test \
    --destdir bin --joined-dictionary --workers 1 > preprocess.log 2>&1 || { echo "preprocess (see $run/preprocess.log)"; return 1; }
  local user_dir train
  user_dir=$("$bin/fairseq-admin-options" --user-dir) || { echo "fairseq-admin-options --user-dir"; return 1; }
  train=("$bin/fairseq-train" bin --user-dir "$user_dir" --task translation --arch admin_transformer
    --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 32 --decoder-embed-dim 32
    --encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 --encoder-attention-heads 2 --decoder-attention-heads 2
    --share-all-embeddings --optimizer adam --lr 1e-3 --lr-scheduler inverse_sqrt --warmup-updates 4
    --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 1000 --cpu --num-workers 0 --seed 1
    --save-dir ckpt --no-epoch-checkpoints --log-format simple --log-interval 1
    --eval-bleu --eval-bleu-detok space --eval-bleu-args '{"beam": 1, "max_len_a": 0, "max_len_b": 12}')
  "${train[@]}" --max-update 6 > train.log 2>&1 || { echo "train (see $run/train.log)"; return 1; }
  "${train[@]}" --max-update 10 > resume.log 2>&1 || { echo "resume (see $run/resume.log)"; return 1; }
  grep -q "Loaded checkpoint" resume.log && grep -q "num_updates 10" resume.log ||
    { echo "resume did not continue from the checkpoint (see $run/resume.log)"; return 1; }
  "$bin/fairseq-generate" bin --user-dir "$user_dir" --path ckpt/checkpoint_last.pt --beam 2 --batch-size 16 \
    --required-batch-size-multiple 1 --cpu > generate.log 2>&1 || { echo "generate (see $run/generate.log)"; return 1; }
  [ "$(grep -c '^H-' generate.log)" = 30 ] || { echo "generate: not 30 hypotheses (see $run/generate.log)"; return 1; }
  "$bin/fairseq-admin-export" --checkpoint ckpt/checkpoint_last.pt --out export/model.pt --data bin > export.log 2>&1 ||
    { echo "export (see $run/export.log)"; return 1; }
  "$bin/fairseq-generate" bin --path export/model.pt --beam 2 --batch-size 16 --required-batch-size-multiple 1 \
    --cpu > generate-export.log 2>&1 || { echo "generate on the export (see $run/generate-export.log)"; return 1; }
  [ "$(grep -c '^H-' generate-export.log)" = 30 ] ||
    { echo "generate on the export: not 30 hypotheses (see $run/generate-export.log)"; return 1; }
}

failed=0
results=()
for v in "${versions[@]}"; do
  env=$work/numpy-$v
  stamp="$torch_pin $torchaudio_pin numpy==$v"
  pip=("$env/bin/python" -m pip install --quiet -c "$env/constraints.txt")
  if [ "$fresh" = 1 ] || [ ! -f "$env/.stamp" ] || [ "$(cat "$env/.stamp")" != "$stamp" ]; then
    echo "[check_floors] numpy $v: creating $env"
    rm -rf "$env"
    "$python" -m venv "$env"
    printf '%s\n%s\nnumpy==%s\n' "$torch_pin" "$torchaudio_pin" "$v" > "$env/constraints.txt"
    "${pip[@]}" torch "numpy==$v"
    "${pip[@]}" "$wheel[fairseq]"
    printf '%s\n' "$stamp" > "$env/.stamp"
  else  # the environment is kept; the plugin is this tree's
    echo "[check_floors] numpy $v: reusing $env, installing this tree's wheel"
    "${pip[@]}" --no-deps --force-reinstall "$wheel"
  fi
  got=$("$env/bin/python" -c 'import numpy, torch; print(numpy.__version__, torch.__version__)')
  echo "[check_floors] numpy $v: running in $env/run (numpy, torch: $got)"
  if why=$(tiny_run "$env/bin" "$env/run"); then
    results+=("numpy $v (torch ${got#* }): ok: trained, resumed, generated, exported")
  else
    results+=("numpy $v (torch ${got#* }): FAILED at $why")
    failed=1
  fi
done
printf '%s\n' "${results[@]}"
exit "$failed"
