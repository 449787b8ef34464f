# Shared pipeline for data-prep/prepare-*.sh. Sourced, not executed.
#
# A calling script sets, before `source`:
#   SCRIPT_NAME, SRC, TGT, VOCAB_SIZE (default), ALLOW_LANG_FLAGS (0/1), usage() (prints --help text)
# and defines three hooks:
#   fetch_corpora            download + unpack everything into $OUT/orig (online mode only)
#   resolve_inputs           fill TRAIN_PREFIXES[], DEV_PREFIX and either TEST_PREFIX or TEST_SGM_SRC/TEST_SGM_REF
#                            from $RAW_DIR and the --train-prefix/--dev-prefix/--test-sgm-dir overrides
#   CLEAN_ARGS[]             extra arguments for `prepare.py clean` on the training data (filters)
# then calls `run_pipeline "$@"`.
#
# Stages (each prints what it does, records a marker in $OUT/.stages/NAME.done holding its settings, and is skipped
# when the marker matches and its outputs exist; once a stage runs, every later stage runs again):
#   fetch -> gather -> clean -> spm -> encode -> binarize
# A prefix P names a file pair P.$SRC / P.$TGT; each file may also be gzipped (P.$SRC.gz), read as-is.

set -euo pipefail

LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$LIB_DIR/.." && pwd)"
PYTHON="${PYTHON:-python3}"
# Run prepare.py as a file: importing the fairseq_admin package would import fairseq (slow) for no reason.
# a repository checkout has fairseq_admin/ beside data-prep/; an installed copy lies in fairseq_admin/shipped/data-prep/
if [[ -d $REPO_ROOT/fairseq_admin ]]; then PREPARE=("$PYTHON" "$REPO_ROOT/fairseq_admin/cli/prepare.py")
else PREPARE=("$PYTHON" "$REPO_ROOT/../cli/prepare.py"); fi
FAIRSEQ_PREPROCESS="${FAIRSEQ_PREPROCESS:-fairseq-preprocess}"

log() { echo "[$SCRIPT_NAME] $*"; }
die() { echo "[$SCRIPT_NAME] error: $*" >&2; exit 1; }

# ------------------------------------------------------------------------------------------------ arguments
OUT="" RAW_DIR="" WORKERS="" MAX_SENTENCES=10000000 DEV_PREFIX_OPT="" TEST_SGM_DIR_OPT=""
TRAIN_PREFIX_OPT=()

parse_args() {
    while (($#)); do
        case "$1" in
            -h|--help) usage; exit 0 ;;
            --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
            --raw-dir) RAW_DIR="${2:?--raw-dir needs a directory}"; shift 2 ;;
            --workers) WORKERS="${2:?--workers needs a number}"; shift 2 ;;
            --vocab-size) VOCAB_SIZE="${2:?--vocab-size needs a number}"; shift 2 ;;
            --max-sentences) MAX_SENTENCES="${2:?--max-sentences needs a number}"; shift 2 ;;
            --train-prefix) TRAIN_PREFIX_OPT+=("${2:?--train-prefix needs a prefix}"); shift 2 ;;
            --dev-prefix) DEV_PREFIX_OPT="${2:?--dev-prefix needs a prefix}"; shift 2 ;;
            --test-sgm-dir) TEST_SGM_DIR_OPT="${2:?--test-sgm-dir needs a directory}"; shift 2 ;;
            --src|--tgt)
                ((ALLOW_LANG_FLAGS)) || die "$1 is not supported by this script (see --help)"
                if [[ $1 == --src ]]; then SRC="${2:?--src needs a language}"
                else TGT="${2:?--tgt needs a language}"; fi
                shift 2 ;;
            *) usage >&2; die "unknown argument: $1" ;;
        esac
    done
    [[ -n $OUT ]] || { usage >&2; die "--out DIR is required"; }
    [[ ! -e $OUT || -d $OUT ]] || die "--out $OUT exists and is not a directory"
    [[ $VOCAB_SIZE =~ ^[1-9][0-9]*$ ]] || die "--vocab-size must be a positive integer, got '$VOCAB_SIZE'"
    [[ $MAX_SENTENCES =~ ^[1-9][0-9]*$ ]] || die "--max-sentences must be a positive integer, got '$MAX_SENTENCES'"
    if [[ -z $WORKERS ]]; then WORKERS="$(nproc 2>/dev/null || echo 1)"; fi
    [[ $WORKERS =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive integer, got '$WORKERS'"
    [[ $SRC != "$TGT" ]] || die "source and target language are both '$SRC'"
    if [[ -n $RAW_DIR ]]; then
        [[ -d $RAW_DIR ]] || die "--raw-dir $RAW_DIR is not a directory"
        RAW_DIR="$(cd "$RAW_DIR" && pwd)"
    fi
    local i
    for i in "${!TRAIN_PREFIX_OPT[@]}"; do TRAIN_PREFIX_OPT[i]="$(abs_path "${TRAIN_PREFIX_OPT[i]}")"; done
    [[ -z $DEV_PREFIX_OPT ]] || DEV_PREFIX_OPT="$(abs_path "$DEV_PREFIX_OPT")"
    [[ -z $TEST_SGM_DIR_OPT ]] || TEST_SGM_DIR_OPT="$(abs_path "$TEST_SGM_DIR_OPT")"
    # Any local-input flag means offline mode: nothing is downloaded, missing inputs are errors.
    OFFLINE=0
    if [[ -n $RAW_DIR || -n $DEV_PREFIX_OPT || -n $TEST_SGM_DIR_OPT || ${#TRAIN_PREFIX_OPT[@]} -gt 0 ]]; then
        OFFLINE=1
    fi
    mkdir -p "$OUT"
    OUT="$(cd "$OUT" && pwd)"
    STAGE_DIR="$OUT/.stages"
    mkdir -p "$STAGE_DIR"
}

# ---------------------------------------------------------------------------------------------------- files

# abs_path PATH: PATH made absolute through its (existing) directory, so markers do not depend on the cwd.
abs_path() {
    local dir
    dir="$(cd "$(dirname "$1")" 2> /dev/null && pwd)" || die "directory of $1 does not exist"
    echo "$dir/$(basename "$1")"
}

# pair_file PREFIX LANG: the existing file PREFIX.LANG or PREFIX.LANG.gz, or nothing.
pair_file() {
    if [[ -f $1.$2 ]]; then echo "$1.$2"; elif [[ -f $1.$2.gz ]]; then echo "$1.$2.gz"; fi
}

# has_pair PREFIX: true when both sides exist.
has_pair() { [[ -n "$(pair_file "$1" "$SRC")" && -n "$(pair_file "$1" "$TGT")" ]]; }

require_pair() {
    has_pair "$1" || die "missing input: need $1.$SRC and $1.$TGT (optionally .gz) -- see --help for the layout"
    local lang f
    for lang in "$SRC" "$TGT"; do
        f="$(pair_file "$1" "$lang")"
        case "$f" in
            *.gz) [[ -n "$(gzip -dc "$f" 2> /dev/null | head -c 1)" ]] || die "input $f is empty (or not gzip)" ;;
            *) [[ -s $f ]] || die "input $f is empty" ;;
        esac
    done
}

# copy_text SRC_FILE DEST: copy a (possibly gzipped) text file, verifying gzip integrity.
copy_text() {
    case "$1" in
        *.gz) gzip -dc "$1" > "$2.tmp" || die "$1: truncated or corrupt gzip file"; mv "$2.tmp" "$2" ;;
        *) cp "$1" "$2" ;;
    esac
}

# ----------------------------------------------------------------------------------------------- downloads

# verify_archive FILE [NAME]: the archive lists/decompresses completely; its type comes from NAME (default FILE).
# statmt.org publishes no checksums and we cannot fetch sizes offline, so completeness is checked instead: a full
# gzip CRC check plus a tar listing catches the common failure, a truncated or interrupted download.
verify_archive() {
    case "${2:-$1}" in
        *.tgz|*.tar.gz) gzip -t "$1" 2> /dev/null && tar -tzf "$1" > /dev/null 2>&1 ;;
        *.tar) tar -tf "$1" > /dev/null 2>&1 ;;
        *.gz) gzip -t "$1" 2> /dev/null ;;
        *) [[ -s $1 ]] ;;
    esac
}

# download URL DEST: resumable download (curl -C - or wget -c), verified before it takes its final name, so a
# file under DEST is always complete; skipped when DEST exists and verifies.
download() {
    local url=$1 dest=$2
    if [[ -f $dest ]]; then
        if verify_archive "$dest"; then log "  have $dest"; return 0; fi
        log "  $dest is incomplete or corrupt, resuming it"
        mv "$dest" "$dest.part"
    fi
    log "  downloading $url"
    mkdir -p "$(dirname "$dest")"
    if command -v curl > /dev/null; then
        curl -fL --retry 3 -C - -o "$dest.part" "$url" || die "download failed: $url"
    elif command -v wget > /dev/null; then
        wget -c -O "$dest.part" "$url" || die "download failed: $url"
    else
        die "neither curl nor wget is installed; download the files yourself and use --raw-dir"
    fi
    verify_archive "$dest.part" "$dest" \
        || die "$dest.part: downloaded file is corrupt or truncated (delete it and re-run)"
    mv "$dest.part" "$dest"
}

# extract ARCHIVE DIR: unpack once (marker per archive).
extract() {
    local archive=$1 dir=$2 marker="$2/.extracted.$(basename "$1")"
    [[ -f $marker ]] && return 0
    log "  extracting $archive"
    case "$archive" in
        *.tgz|*.tar.gz) tar -xzf "$archive" -C "$dir" || die "$archive: extraction failed (corrupt archive?)" ;;
        *.tar) tar -xf "$archive" -C "$dir" || die "$archive: extraction failed (corrupt archive?)" ;;
    esac
    touch "$marker"
}

# -------------------------------------------------------------------------------------- WMT14 (En-De, En-Fr)
# The WMT scripts set URLS[] (archives), CORPORA[] (training prefixes inside the unpacked archives, as in
# fairseq's examples/translation/prepare-wmt14*.sh), DEV_NAME (dev/newstest2013) and SGM_PAIR (deen / fren).

wmt_fetch() {
    local url
    for url in "${URLS[@]}"; do
        download "$url" "$RAW_DIR/$(basename "$url")"
        extract "$RAW_DIR/$(basename "$url")" "$RAW_DIR"
    done
}

# Layout looked up under RAW_DIR (unless overridden): the unpacked statmt archives (CORPORA[], dev/newstest2013,
# test-full/*.sgm); or the simple form RAW_DIR/train.L, RAW_DIR/{valid,val,dev}.L and RAW_DIR/*.sgm or RAW_DIR/sgm/.
wmt_resolve() {
    local c found=() missing=() d
    if ((${#TRAIN_PREFIX_OPT[@]})); then
        TRAIN_PREFIXES=("${TRAIN_PREFIX_OPT[@]}")
    elif [[ -n $RAW_DIR ]]; then
        for c in "${CORPORA[@]}"; do
            if has_pair "$RAW_DIR/$c"; then found+=("$RAW_DIR/$c"); else missing+=("$c"); fi
        done
        if ((${#found[@]})); then
            TRAIN_PREFIXES=("${found[@]}")
            ((${#missing[@]} == 0)) || log "warning: corpora not found under $RAW_DIR, left out: ${missing[*]}"
        elif has_pair "$RAW_DIR/train"; then
            TRAIN_PREFIXES=("$RAW_DIR/train")
        else
            die "no training data under $RAW_DIR: expected $RAW_DIR/train.{$SRC,$TGT}" \
                "or the WMT corpora ${CORPORA[*]} (.$SRC/.$TGT)"
        fi
    fi
    if [[ -n $DEV_PREFIX_OPT ]]; then
        DEV_PREFIX="$DEV_PREFIX_OPT"
    elif [[ -n $RAW_DIR ]]; then
        for d in "$DEV_NAME" valid val dev; do
            if has_pair "$RAW_DIR/$d"; then DEV_PREFIX="$RAW_DIR/$d"; break; fi
        done
    fi
    local sgm_dir="$TEST_SGM_DIR_OPT"
    if [[ -z $sgm_dir ]]; then
        sgm_dir="$RAW_DIR"
        for d in "$RAW_DIR/test-full" "$RAW_DIR/sgm"; do [[ -d $d ]] && sgm_dir="$d" && break; done
    fi
    TEST_SGM_SRC="$sgm_dir/newstest2014-$SGM_PAIR-src.$SRC.sgm"
    TEST_SGM_REF="$sgm_dir/newstest2014-$SGM_PAIR-ref.$TGT.sgm"
}

# -------------------------------------------------------------------------------------------------- stages
FORCE_REST=0

# run_stage NAME SIGNATURE FUNCTION OUTPUT...: run FUNCTION unless NAME already finished with the same SIGNATURE
# (its settings) and all OUTPUTs exist. The marker is removed first and written last, so an interrupted stage reruns.
run_stage() {
    local name=$1 sig=$2 fn=$3 marker="$STAGE_DIR/$1.done" missing=0 f
    shift 3
    for f in "$@"; do [[ -e $f ]] || missing=1; done
    if ((!FORCE_REST && !missing)) && [[ -f $marker && "$(cat "$marker")" == "$sig" ]]; then
        log "stage $name: already done, skipping"
        return 0
    fi
    log "stage $name: running"
    rm -f "$marker"
    "$fn"
    for f in "$@"; do [[ -e $f ]] || die "stage $name: expected output $f was not produced"; done
    printf '%s\n' "$sig" > "$marker"
    FORCE_REST=1
    log "stage $name: done"
}

check_lines() { "${PREPARE[@]}" check-lines "$@" || die "input check failed (see the error above)"; }

stage_gather() {
    local p
    : > "$OUT/train.list.tmp"
    for p in "${TRAIN_PREFIXES[@]}"; do
        check_lines "$(pair_file "$p" "$SRC")" "$(pair_file "$p" "$TGT")"
        printf '%s\n' "$p" >> "$OUT/train.list.tmp"
    done
    mv "$OUT/train.list.tmp" "$OUT/train.list"
    log "  valid: $DEV_PREFIX"
    check_lines "$(pair_file "$DEV_PREFIX" "$SRC")" "$(pair_file "$DEV_PREFIX" "$TGT")"
    copy_text "$(pair_file "$DEV_PREFIX" "$SRC")" "$OUT/valid.raw.$SRC"
    copy_text "$(pair_file "$DEV_PREFIX" "$TGT")" "$OUT/valid.raw.$TGT"
    if [[ -n ${TEST_PREFIX:-} ]]; then
        log "  test: $TEST_PREFIX"
        check_lines "$(pair_file "$TEST_PREFIX" "$SRC")" "$(pair_file "$TEST_PREFIX" "$TGT")"
        copy_text "$(pair_file "$TEST_PREFIX" "$SRC")" "$OUT/test.raw.$SRC"
        copy_text "$(pair_file "$TEST_PREFIX" "$TGT")" "$OUT/test.raw.$TGT"
    else
        log "  test: $TEST_SGM_SRC + $TEST_SGM_REF"
        "${PREPARE[@]}" sgm2txt "$TEST_SGM_SRC" "$TEST_SGM_REF" "$OUT/test.raw.$SRC" "$OUT/test.raw.$TGT" \
            || die "could not extract the test set from sgm (see above)"
    fi
}

stage_clean() {
    local p pairs=()
    while IFS= read -r p; do
        pairs+=(--pair "$(pair_file "$p" "$SRC")" "$(pair_file "$p" "$TGT")")
    done < "$OUT/train.list"
    "${PREPARE[@]}" clean "${pairs[@]}" "${CLEAN_ARGS[@]}" --report "$OUT/clean-report.json" \
        --src-out "$OUT/train.clean.$SRC" --tgt-out "$OUT/train.clean.$TGT" || die "cleaning the training data failed"
    log "  drop report: $OUT/clean-report.json"
    local split
    for split in valid test; do
        "${PREPARE[@]}" clean --no-filter --pair "$OUT/$split.raw.$SRC" "$OUT/$split.raw.$TGT" \
            --src-out "$OUT/$split.clean.$SRC" --tgt-out "$OUT/$split.clean.$TGT" || die "normalizing $split failed"
    done
}

stage_spm() {
    "${PREPARE[@]}" spm-train --input "$OUT/train.clean.$SRC" "$OUT/train.clean.$TGT" --model-prefix "$OUT/spm" \
        --vocab-size "$VOCAB_SIZE" --max-sentences "$MAX_SENTENCES" --threads "$WORKERS" \
        || die "sentencepiece training failed"
}

stage_encode() {
    local split
    mkdir -p "$OUT/bpe"
    for split in train valid test; do
        "${PREPARE[@]}" spm-encode --model "$OUT/spm.model" \
            --inputs "$OUT/$split.clean.$SRC" "$OUT/$split.clean.$TGT" \
            --outputs "$OUT/bpe/$split.$SRC" "$OUT/bpe/$split.$TGT" || die "encoding $split failed"
    done
}

stage_binarize() {
    rm -rf "$OUT/data-bin"
    "$FAIRSEQ_PREPROCESS" --source-lang "$SRC" --target-lang "$TGT" \
        --trainpref "$OUT/bpe/train" --validpref "$OUT/bpe/valid" --testpref "$OUT/bpe/test" \
        --destdir "$OUT/data-bin" --joined-dictionary --workers "$WORKERS" > "$OUT/preprocess.log" 2>&1 \
        || { tail -n 20 "$OUT/preprocess.log" >&2; die "fairseq-preprocess failed (log: $OUT/preprocess.log)"; }
    cp "$OUT/spm.model" "$OUT/data-bin/spm.model"
}

run_pipeline() {
    parse_args "$@"
    "$PYTHON" -c "import sentencepiece" 2> /dev/null \
        || die "'$PYTHON' cannot import sentencepiece: activate the project's environment or set PYTHON=..."
    log "output: $OUT  ($SRC -> $TGT, vocab $VOCAB_SIZE, workers $WORKERS)"
    if ((OFFLINE)); then
        log "stage fetch: offline (local inputs), nothing to download"
    else
        RAW_DIR="$OUT/orig"
        mkdir -p "$RAW_DIR"
        run_stage fetch "fetch" fetch_corpora
        FORCE_REST=0  # later stages decide from their own inputs' settings (the raw paths stay the same)
    fi
    TRAIN_PREFIXES=() DEV_PREFIX="" TEST_PREFIX="" TEST_SGM_SRC="" TEST_SGM_REF=""
    resolve_inputs
    ((${#TRAIN_PREFIXES[@]})) || die "no training data found (see --help for the --raw-dir layout)"
    local p
    for p in "${TRAIN_PREFIXES[@]}"; do require_pair "$p"; done
    [[ -n $DEV_PREFIX ]] || die "no dev set found (give --dev-prefix PREFIX; see --help)"
    require_pair "$DEV_PREFIX"
    if [[ -z $TEST_PREFIX ]]; then
        [[ -f $TEST_SGM_SRC ]] || die "missing test sgm file: $TEST_SGM_SRC (give --test-sgm-dir DIR)"
        [[ -f $TEST_SGM_REF ]] || die "missing test sgm file: $TEST_SGM_REF (give --test-sgm-dir DIR)"
    else
        require_pair "$TEST_PREFIX"
    fi

    local inputs="$SRC-$TGT train=${TRAIN_PREFIXES[*]} dev=$DEV_PREFIX test=$TEST_PREFIX$TEST_SGM_SRC,$TEST_SGM_REF"
    run_stage gather "$inputs" stage_gather \
        "$OUT/train.list" "$OUT/valid.raw.$SRC" "$OUT/valid.raw.$TGT" "$OUT/test.raw.$SRC" "$OUT/test.raw.$TGT"
    run_stage clean "${CLEAN_ARGS[*]}" stage_clean \
        "$OUT/train.clean.$SRC" "$OUT/train.clean.$TGT" "$OUT/clean-report.json" \
        "$OUT/valid.clean.$SRC" "$OUT/valid.clean.$TGT" "$OUT/test.clean.$SRC" "$OUT/test.clean.$TGT"
    run_stage spm "vocab=$VOCAB_SIZE max_sentences=$MAX_SENTENCES" stage_spm "$OUT/spm.model" "$OUT/spm.vocab"
    run_stage encode "encode" stage_encode \
        "$OUT/bpe/train.$SRC" "$OUT/bpe/train.$TGT" "$OUT/bpe/valid.$SRC" "$OUT/bpe/valid.$TGT" \
        "$OUT/bpe/test.$SRC" "$OUT/bpe/test.$TGT"
    run_stage binarize "binarize" stage_binarize \
        "$OUT/data-bin/dict.$SRC.txt" "$OUT/data-bin/dict.$TGT.txt" \
        "$OUT/data-bin/train.$SRC-$TGT.$SRC.bin" "$OUT/data-bin/train.$SRC-$TGT.$TGT.bin" \
        "$OUT/data-bin/valid.$SRC-$TGT.$SRC.bin" "$OUT/data-bin/test.$SRC-$TGT.$TGT.bin"
    log "finished: binarized data in $OUT/data-bin, sentencepiece model $OUT/spm.model," \
        "raw references $OUT/test.raw.$TGT and $OUT/valid.raw.$TGT"
}
