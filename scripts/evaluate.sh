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
                                [--no-aggressive-dash] [--choose-on-valid --valid-ref DIR/valid.raw.de
                                [--valid-subset valid] [--grid-lenpens 0.6,1.0,1.5]] [--help]

Steps (each printed):
  1. average the last N checkpoints with fairseq-admin-average (N = 0 or 1: checkpoint_best.pt, or the only one)
  2. fairseq-generate on the binarized subset (defaults: en-de beam 4 / lenpen 0.6, en-fr beam 5 / lenpen 0.8,
     de-en beam 5 / lenpen 1)
  3. H-<id> hypotheses in sentence order, sentencepiece-decoded; their count must equal the reference's line count
  4. BLEU: (a) sacreBLEU on detokenized text vs the raw reference (signature printed; same as the sacrebleu CLI)
           (b) the papers' tokenized BLEU: Moses -a tokenization + ##AT##-##AT## compound split, tokenize=none
               (de-en: Moses tokens without -a or compound split, as IWSLT14 is tokenized)
With --choose-on-valid, between steps 1 and 2: the validation set (--valid-subset, scored against --valid-ref) is
translated with checkpoint_best.pt and (N > 1) the average of the last N, once each with --nbest BEAM, and every
length penalty of --grid-lenpens is scored from that one translation (fairseq_admin/choose_on_valid.py); the grid
(validation sacreBLEU, length ratio) is printed and the best cell chosen (ties: checkpoint_best.pt first, then the
earlier length penalty); steps 2-4 then translate the test subset once with it. The test set is never used to choose.
Excludes --lenpen, and --beam/--lenpen/--nbest/--sampling... in --generate-args.
Writes a JSON (--out, default CHECKPOINTS/eval-SUBSET.json) with both scores, signature, checkpoints, command, counts
(and with --choose-on-valid the grid and the choice, under "chosen_on_valid").
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
# a repository checkout (fairseq_admin/ beside scripts/) is imported from here; an installed copy
# (fairseq_admin/shipped/scripts/, fairseq-admin-quickstart) imports the package its PYTHON has
if [ -d "$root/fairseq_admin" ]; then export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"; fi
echo "[evaluate.sh] $PYTHON -m fairseq_admin.cli.evaluate $*"
exec "$PYTHON" -m fairseq_admin.cli.evaluate "$@"
