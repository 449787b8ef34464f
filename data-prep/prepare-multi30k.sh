#!/usr/bin/env bash
# Multi30k task 1 (En-De by default): train / val / test_2016_flickr, raw text, joint sentencepiece BPE, binarized
# with fairseq-preprocess --joined-dictionary. The quick start's data; the pipeline lives in data-prep/lib.sh.
set -euo pipefail

SCRIPT_NAME="prepare-multi30k"
SRC=en TGT=de VOCAB_SIZE=8000 ALLOW_LANG_FLAGS=1
BASE_URL="https://github.com/multi30k/dataset/raw/master/data/task1/raw"
# Benchmark data: the training set is used whole (only normalization; empty pairs would be dropped and reported,
# Multi30k has none), so results stay comparable with published Multi30k numbers.
CLEAN_ARGS=(--max-len 0 --ratio 0)

usage() {
    cat <<USAGE
Usage: bash data-prep/prepare-multi30k.sh --out DIR [--raw-dir DIR] [--workers N] [--vocab-size 8000]
                                          [--src en --tgt de] [--train-prefix PREFIX]... [--dev-prefix PREFIX]

Builds Multi30k task 1 for fairseq in DIR: DIR/data-bin (fairseq-preprocess --joined-dictionary), DIR/spm.model,
DIR/test.raw.TGT and DIR/valid.raw.TGT (untokenized references for BLEU; test = test_2016_flickr),
DIR/clean-report.json. Text is normalized (NFKC; the non-breaking spaces of train.de become spaces).
Re-running skips every finished stage.

Without --raw-dir the files {train,val,test_2016_flickr}.{SRC,TGT}.gz are downloaded from
$BASE_URL into DIR/orig (resumable, checked with gzip -t).
--raw-dir DIR reads DIR/train.L, DIR/val.L and DIR/test_2016_flickr.L (plain or .gz),
e.g. --raw-dir ../shared/data/multi30k.

Options:
  --out DIR            output directory (required)
  --raw-dir DIR        offline: read the files from DIR (layout above)
  --src L, --tgt L     languages (default en, de; fr and cs exist for task 1)
  --workers N          fairseq-preprocess / sentencepiece threads (default: nproc)
  --vocab-size N       joint BPE vocabulary size (default 8000)
  --max-sentences N    sentences sampled to train sentencepiece (default 10000000)
  --train-prefix P, --dev-prefix P   override the training / dev pair (files P.SRC, P.TGT)
  -h, --help           this help
Environment: PYTHON (default python3, needs sentencepiece), FAIRSEQ_PREPROCESS (default fairseq-preprocess).
USAGE
}

fetch_corpora() {
    local split lang
    for split in train val test_2016_flickr; do
        for lang in "$SRC" "$TGT"; do
            download "$BASE_URL/$split.$lang.gz" "$RAW_DIR/$split.$lang.gz"
        done
    done
}

resolve_inputs() {
    [[ -n $TEST_SGM_DIR_OPT ]] && die "--test-sgm-dir does not apply to Multi30k"
    TRAIN_PREFIXES=("$RAW_DIR/train")
    if ((${#TRAIN_PREFIX_OPT[@]})); then TRAIN_PREFIXES=("${TRAIN_PREFIX_OPT[@]}"); fi
    DEV_PREFIX="${DEV_PREFIX_OPT:-$RAW_DIR/val}"
    TEST_PREFIX="$RAW_DIR/test_2016_flickr"
    return 0
}

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_pipeline "$@"
