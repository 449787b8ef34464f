#!/usr/bin/env bash
# Evaluate checkpoints like the Admin paper: average the last N, fairseq-generate, sacreBLEU + tokenized (compound-split) BLEU.
# Thin wrapper: the logic lives in fairseq_admin/cli/evaluate.py (also installed as `fairseq-admin-evaluate`).
set -euo pipefail

if [ "$#" -eq 0 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  cat <<'USAGE'
usage: bash scripts/evaluate.sh --pair {en-de,en-fr,de-en} --checkpoints DIR --data DIR/data-bin --spm DIR/spm.model
                                --ref DIR/test.raw.de [--num-checkpoints 10] [--average-by auto|epoch|update]
                                [--beam 4 --lenpen 0.6] [--subset test] [--out results.json] [--workdir DIR]
                                [--user-dir "$(fairseq-admin-options --user-dir)"] [--cpu] [--max-tokens N] [--generate-args 'ARGS']
                                [--no-aggressive-dash] [--help]

Steps (each printed):
  1. average the last N checkpoints with fairseq-admin-average (N = 0 or 1: checkpoint_best.pt, or the only one)
  2. fairseq-generate on the binarized subset (defaults: en-de beam 4 / lenpen 0.6, en-fr beam 5 / lenpen 0.8,
     de-en beam 5 / lenpen 1)
  3. H-<id> hypotheses in sentence order, sentencepiece-decoded; their count must equal the reference's line count
  4. BLEU: (a) sacreBLEU on detokenized text vs the raw reference (signature printed; same as the sacrebleu CLI)
           (b) the papers' tokenized BLEU: Moses -a tokenization + ##AT##-##AT## compound split, tokenize=none
               (de-en: Moses tokens without -a or compound split, as IWSLT14 is tokenized)
Writes a JSON (--out, default CHECKPOINTS/eval-SUBSET.json) with both scores, signature, checkpoints, command, counts.
Environment: PYTHON (default: the project's venv, $FAIRSEQ_ADMIN_VENV or .venv, if present, else python3).
USAGE
  exit 0
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  venv=${FAIRSEQ_ADMIN_VENV:-$root/.venv}
  if [ -x "$venv/bin/python" ]; then PYTHON="$venv/bin/python"; else PYTHON=$(command -v python3); fi
fi
# fairseq-generate and friends live next to the interpreter
export PATH="$(dirname "$PYTHON"):$PATH"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
echo "[evaluate.sh] $PYTHON -m fairseq_admin.cli.evaluate $*"
exec "$PYTHON" -m fairseq_admin.cli.evaluate "$@"
