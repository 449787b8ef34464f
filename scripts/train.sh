#!/usr/bin/env bash
# Train a published Post-LN / Pre-LN / Admin / B2T setting with the paper's hyperparameters (fairseq_admin/recipes.py),
# keeping the paper's tokens per update on any number of GPUs. Prints the exact command before running it.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bash scripts/train.sh --pair PAIR --scheme SCHEME --layers ENC-DEC [--gpus G] [--nodes N]
                             [--data DIR] [--save-dir DIR] [--max-tokens T] [--source PAPER] [--no-fp16]
                             [--launcher fairseq|torchrun|slurm] [--node-rank R] [--master-addr HOST]
                             [--master-port P] [--distributed-port P] [--dry-run] [--list] [--help]
                             [-- EXTRA fairseq-train ARGS]

Builds the fairseq-train command of one published setting (table: bash scripts/train.sh --list), prints it on
stdout, then runs it (--dry-run: print only, exit 0).

  --pair PAIR          en-de (WMT14), en-fr (WMT14), de-en (IWSLT14)
  --scheme SCHEME      postln | preln | admin | b2t | deepnorm | t_fixup   (sets --arch SCHEME_transformer_wmt_en_de etc.)
  --layers ENC-DEC     e.g. 6-6, 12-12, 18-18, 60-12 (one number: ENC = DEC)
  --source PAPER       liu2020 | liu2020b | takase2023, only when two papers published the same setting
                       (en-de preln 18-18: liu2020 = Admin paper's recipe, takase2023 = B2T paper's recipe)
  --gpus G             GPUs per node (default 1)
  --nodes N            nodes (default 1). Tokens per update = N x G x max-tokens x update-freq = the paper's:
                       --update-freq is computed, never give it yourself
  --max-tokens T       per-GPU batch; default: the paper's (smaller when the paper's would overshoot)
  --data DIR           binarized data (default data/wmt14_en_de/data-bin, data/wmt14_en_fr/data-bin,
                       data/iwslt14_de_en/data-bin)
  --save-dir DIR       checkpoints (default checkpoints/PAIR_SCHEME_LAYERS_SOURCE); Admin's profiled ω is saved
                       there as profile.ratio.init
  --no-fp16            drop --fp16 (the papers trained in fp16; use this with `-- --cpu`)
  --dry-run            print the command and exit 0
  --list               print the table of published settings (hyperparameters, batch, BLEU) and exit
  -- ARGS              passed to fairseq-train unchanged, after the recipe's flags (the last occurrence of a flag
                       wins, e.g. `-- --lr 5e-4 --patience 5`). --max-tokens, --update-freq,
                       --distributed-world-size, --arch, --encoder-layers, --decoder-layers are refused there.

One node, several GPUs: fairseq-train spawns one process per GPU itself (--distributed-world-size G):
  bash scripts/train.sh --pair en-de --scheme admin --layers 18-18 --gpus 4

Several nodes, torchrun (run on every node, R = 0..N-1; HOST = node 0's address):
  bash scripts/train.sh --pair en-de --scheme admin --layers 18-18 --nodes 2 --gpus 8 \
       --launcher torchrun --node-rank R --master-addr HOST
which runs
  torchrun --nnodes 2 --nproc-per-node 8 --node-rank R --master-addr HOST --master-port 29500 \
       $(which fairseq-train) DATA ... --distributed-world-size 16
(fairseq reads RANK/WORLD_SIZE/MASTER_ADDR from torchrun's environment.)

Several nodes, SLURM (inside `sbatch --nodes 2 --ntasks-per-node 8 --gpus-per-node 8`):
  bash scripts/train.sh --pair en-de --scheme admin --layers 18-18 --nodes 2 --gpus 8 --launcher slurm
which runs
  srun --nodes 2 --ntasks-per-node 8 --gpus-per-node 8 fairseq-train DATA ... \
       --distributed-world-size 16 --distributed-port 12345
(fairseq finds the first host with `scontrol show hostnames` and the ranks from SLURM_PROCID/SLURM_LOCALID.)

Admin: the model profiles ω on the first training batch of the run (under --task translation, as every row
trains) and writes it to SAVE_DIR/profile.ratio.init; a resumed run does not profile again.
Environment: PYTHON (default .venv/bin/python, else python3); .venv/bin is put on PATH for fairseq-train.
USAGE
}

for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --) break ;;
  esac
done

# recipes.py reads these as integer defaults of --node-rank / --master-port: refuse anything else here, in one line
for var in NODE_RANK MASTER_PORT; do
  if [ -n "${!var+set}" ] && ! [[ ${!var} =~ ^[0-9]+$ ]]; then
    echo "train.sh: error: environment variable $var must be a non-negative integer, got '${!var}'" >&2
    exit 2
  fi
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${FAIRSEQ_ADMIN_VENV:-$root/.venv}
if [ -d "$venv/bin" ]; then
  export PATH="$venv/bin:$PATH"
fi
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x "$venv/bin/python" ]; then py=$venv/bin/python; else py=python3; fi
fi

# recipes.py is standard-library only; run it as a file (-P: without its folder on sys.path) so that it does not
# import the fairseq_admin package (torch + fairseq, ~10 s). It prints the command on stdout, its batch arithmetic
# on stderr, and then execs the command unless --dry-run.
# a repository checkout has fairseq_admin/ beside scripts/; an installed copy lies in fairseq_admin/shipped/scripts/
if [ -d "$root/fairseq_admin" ]; then recipes=$root/fairseq_admin/recipes.py; else recipes=$root/../recipes.py; fi
FAIRSEQ_ADMIN_RECIPES_PROG=train.sh exec "$py" -P "$recipes" "$@"  # its errors are signed train.sh
