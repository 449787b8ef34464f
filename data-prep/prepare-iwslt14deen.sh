#!/usr/bin/env bash
# IWSLT14 De-En (TED talks): the splits and cleaning of fairseq's classic examples/translation/prepare-iwslt14.sh
# (data-prep/iwslt14.py), then this project's pipeline (data-prep/lib.sh): joint sentencepiece BPE, binarized with
# fairseq-preprocess --joined-dictionary. The data of the Admin paper's IWSLT14 rows of scripts/train.sh --list.
set -euo pipefail

SCRIPT_NAME="prepare-iwslt14deen"
SRC=de TGT=en VOCAB_SIZE=10000 ALLOW_LANG_FLAGS=0
URL="https://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"
# The classic filter (clean-corpus-n -ratio 1.5, 1-175 Moses tokens) already ran in the split stage, before the
# valid set is taken from the cleaned training pairs; the pipeline's clean stage only normalizes.
CLEAN_ARGS=(--max-len 0 --ratio 0)

usage() {
    cat <<USAGE
Usage: bash data-prep/prepare-iwslt14deen.sh --out DIR [--raw-dir DIR] [--workers N] [--vocab-size 10000]

Builds IWSLT14 De-En for fairseq in DIR: DIR/data-bin (fairseq-preprocess --joined-dictionary, de -> en),
DIR/spm.model, DIR/test.raw.en and DIR/valid.raw.en (references for BLEU), DIR/iwslt14-report.json (pairs per
split, pairs dropped by the cleaning), DIR/clean-report.json. Re-running skips every finished stage.

Splits and cleaning are the classic recipe's (fairseq examples/translation/prepare-iwslt14.sh):
  train  train.tags.de-en.* without the <url>/<talkid>/<keywords> lines and the <title>/<description> tags;
         pairs dropped as clean-corpus-n.perl -ratio 1.5 ... 1 175 on Moses tokens (sacremoses) would; lowercased
  valid  every 23rd of the cleaned training pairs (the others are train)
  test   IWSLT14.TED.dev2010 + TEDX.dev2012 + TED.tst2010 + tst2011 + tst2012 (the <seg> lines), lowercased
The text stays untokenized (sentencepiece encodes it); evaluate with fairseq-admin-evaluate --pair de-en, whose
tokenized BLEU Moses-tokenizes hypotheses and references as the classic data is tokenized.

Without --raw-dir, de-en.tgz is downloaded from $URL into DIR/orig (resumable, checked with gzip -t/tar -t).
--raw-dir DIR reads the unpacked archive: DIR/train.tags.de-en.{de,en} and DIR/IWSLT14.*.de-en.{de,en}.xml
(or the same under DIR/de-en/).

Options:
  --out DIR            output directory (required)
  --raw-dir DIR        offline: read the unpacked de-en.tgz from DIR (layout above)
  --workers N          fairseq-preprocess / sentencepiece threads (default: nproc)
  --vocab-size N       joint BPE vocabulary size (default 10000, the classic recipe's BPE size)
  --max-sentences N    sentences sampled to train sentencepiece (default 10000000)
  -h, --help           this help
Environment: PYTHON (default python3, needs sentencepiece and sacremoses), FAIRSEQ_PREPROCESS.
USAGE
}

fetch_corpora() {
    download "$URL" "$RAW_DIR/de-en.tgz"
    extract "$RAW_DIR/de-en.tgz" "$RAW_DIR"
}

stage_split() {
    "$PYTHON" -c "import sacremoses" 2> /dev/null \
        || die "'$PYTHON' cannot import sacremoses: activate the project's environment or set PYTHON=..."
    "$PYTHON" "$LIB_DIR/iwslt14.py" --orig "$ORIG" --out "$OUT/iwslt14" --report "$OUT/iwslt14-report.json" \
        || die "could not split IWSLT14 (see the error above)"
}

resolve_inputs() {
    if ((${#TRAIN_PREFIX_OPT[@]})) || [[ -n $DEV_PREFIX_OPT || -n $TEST_SGM_DIR_OPT ]]; then
        die "--train-prefix/--dev-prefix/--test-sgm-dir do not apply to IWSLT14: the splits are the classic recipe's"
    fi
    ORIG=$RAW_DIR
    [[ -d $RAW_DIR/de-en ]] && ORIG=$RAW_DIR/de-en
    [[ -f $ORIG/train.tags.de-en.de ]] \
        || die "no IWSLT14 data under $RAW_DIR: expected train.tags.de-en.de (the unpacked de-en.tgz; see --help)"
    local split lang outputs=("$OUT/iwslt14-report.json")
    for split in train valid test; do
        for lang in "$SRC" "$TGT"; do outputs+=("$OUT/iwslt14/$split.$lang"); done
    done
    run_stage split "orig=$ORIG lowercase classic-clean" stage_split "${outputs[@]}"
    TRAIN_PREFIXES=("$OUT/iwslt14/train")
    DEV_PREFIX="$OUT/iwslt14/valid"
    TEST_PREFIX="$OUT/iwslt14/test"
}

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_pipeline "$@"
