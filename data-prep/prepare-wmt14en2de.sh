#!/usr/bin/env bash
# WMT14 English->German: Europarl v7 + Common Crawl + News Commentary v9, dev newstest2013, test newstest2014
# (the official sgm files), cleaned, joint sentencepiece BPE, binarized with fairseq-preprocess --joined-dictionary.
# The pipeline itself lives in data-prep/lib.sh (shared with the En-Fr and Multi30k scripts).
set -euo pipefail

SCRIPT_NAME="prepare-wmt14en2de"
SRC=en TGT=de VOCAB_SIZE=32000 ALLOW_LANG_FLAGS=0
SGM_PAIR=deen DEV_NAME=dev/newstest2013
# The archives fairseq's examples/translation/prepare-wmt14en2de.sh downloads (with its --icml17 News Commentary v9).
URLS=(
    "http://statmt.org/wmt13/training-parallel-europarl-v7.tgz"
    "http://statmt.org/wmt13/training-parallel-commoncrawl.tgz"
    "http://statmt.org/wmt14/training-parallel-nc-v9.tgz"
    "http://statmt.org/wmt14/dev.tgz"
    "http://statmt.org/wmt14/test-full.tgz"
)
CORPORA=(
    "training/europarl-v7.de-en"
    "commoncrawl.de-en"
    "training/news-commentary-v9.de-en"
)
# Training filters: Moses clean-corpus-n settings of fairseq's script (1..250 words, ratio 1.5).
CLEAN_ARGS=(--max-len 250 --ratio 1.5)

usage() {
    cat <<USAGE
Usage: bash data-prep/prepare-wmt14en2de.sh --out DIR [--raw-dir DIR] [--workers N] [--vocab-size 32000]
                                            [--train-prefix PREFIX]... [--dev-prefix PREFIX] [--test-sgm-dir DIR]

Builds WMT14 En-De for fairseq in DIR: DIR/data-bin (fairseq-preprocess --joined-dictionary), DIR/spm.model
(joint sentencepiece BPE), DIR/test.raw.{en,de} and DIR/valid.raw.{en,de} (untokenized references for BLEU),
DIR/clean-report.json (pairs dropped per reason). Re-running skips every finished stage.

Without --raw-dir/--train-prefix/--dev-prefix/--test-sgm-dir the statmt.org archives are downloaded (resumable,
verified by listing them) into DIR/orig. With any of them nothing is downloaded; inputs are plain text files
PREFIX.en / PREFIX.de (optionally .gz) and the official sgm test files, looked up as:
  training   --train-prefix PREFIX (repeatable), else under --raw-dir the unpacked archives
             (training/europarl-v7.de-en, commoncrawl.de-en, training/news-commentary-v9.de-en), else RAW/train
  dev        --dev-prefix PREFIX, else RAW/dev/newstest2013, RAW/valid, RAW/val or RAW/dev
  test       newstest2014-deen-src.en.sgm + newstest2014-deen-ref.de.sgm in --test-sgm-dir, else in
             RAW/test-full, RAW/sgm or RAW

Options:
  --out DIR            output directory (required)
  --raw-dir DIR        offline: read already-downloaded corpora from DIR (layout above)
  --workers N          fairseq-preprocess / sentencepiece threads (default: nproc)
  --vocab-size N       joint BPE vocabulary size (default 32000)
  --max-sentences N    sentences sampled to train sentencepiece (default 10000000)
  -h, --help           this help
Environment: PYTHON (default python3, needs sentencepiece), FAIRSEQ_PREPROCESS (default fairseq-preprocess).
USAGE
}

fetch_corpora() { wmt_fetch; }
resolve_inputs() { wmt_resolve; }

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_pipeline "$@"
