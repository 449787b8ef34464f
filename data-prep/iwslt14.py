"""IWSLT14 De-En split and cleaned as fairseq's classic recipe does it (data-prep/prepare-iwslt14deen.sh runs this).

fairseq examples/translation/prepare-iwslt14.sh (adapted from MIXER's prepareData.sh), step by step:

* train: ``train.tags.de-en.{de,en}`` without the lines holding ``<url>``, ``<talkid>`` or ``<keywords>``, with the
  tags ``<title>``, ``</title>``, ``<description>``, ``</description>`` removed (their text stays); then Moses
  ``clean-corpus-n.perl -ratio 1.5 ... 1 175`` on the Moses-tokenized pairs (``tokenizer.perl -l L``): a pair is
  dropped when a side has fewer than 1 or more than 175 tokens, one side more than 1.5 times the other's tokens,
  or a token longer than 1000 characters (clean-corpus-n's ``-max-word-length`` default); then lowercased
  (``lowercase.perl``);
* valid: every 23rd of those cleaned training pairs (``awk 'NR%23 == 0'``); train: the others;
* test: the ``<seg id="N">`` lines of IWSLT14.TED.dev2010, IWSLT14.TEDX.dev2012, IWSLT14.TED.tst2010, tst2011 and
  tst2012 (``IWSLT14.*.de-en.L.xml``) concatenated in that order, the seg tags removed, ’ replaced by ', lowercased.

The classic recipe then keeps the Moses-tokenized text and learns subword-nmt BPE on it; we write the untokenized
(but lowercased) text, which the shared pipeline encodes with sentencepiece, so the Moses tokens serve only to count
for the cleaning, exactly as the classic recipe counts. Counts go to ``OUT/iwslt14-report.json``.
"""
import argparse
import json
import os
import re
import sys

SRC, TGT = "de", "en"
TRAIN_DROP = ("<url>", "<talkid>", "<keywords>")
TRAIN_STRIP = ("<title>", "</title>", "<description>", "</description>")
TEST_SETS = ("IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010", "IWSLT14.TED.tst2011",
             "IWSLT14.TED.tst2012")
MAX_TOKENS, MIN_TOKENS, RATIO, MAX_WORD_LENGTH, VALID_EVERY = 175, 1, 1.5, 1000, 23
_SEG_OPEN = re.compile(r'<seg id="[0-9]*">\s*')
_SEG_CLOSE = re.compile(r"\s*</seg>\s*")


class InputError(RuntimeError):
    """A user-facing error about the raw files."""


def read_lines(path):
    try:
        with open(path, encoding="utf-8", newline="\n") as f:
            return [line.rstrip("\n") for line in f]
    except FileNotFoundError:
        raise InputError(f"missing input: {path} (--raw-dir must hold the unpacked de-en.tgz: train.tags.de-en.de, "
                         f"IWSLT14.TED.dev2010.de-en.de.xml, ...)") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: invalid UTF-8 ({exc.reason} at byte {exc.start})") from None


def train_lines(path):
    """The classic recipe's grep -v / sed on one side of train.tags."""
    kept = []
    for line in read_lines(path):
        if any(tag in line for tag in TRAIN_DROP):
            continue
        for tag in TRAIN_STRIP:
            line = line.replace(tag, "")
        kept.append(line)
    return kept


def seg_lines(path):
    """The classic recipe's ``grep '<seg id'`` and seg-tag removal on one IWSLT xml file."""
    return [_SEG_CLOSE.sub("", _SEG_OPEN.sub("", line)).replace("\u2019", "'")
            for line in read_lines(path) if "<seg id" in line]


def keep_pair(src_tokens, tgt_tokens):
    """clean-corpus-n.perl -ratio 1.5 CORPUS de en OUT 1 175 on one tokenized pair."""
    n_src, n_tgt = len(src_tokens), len(tgt_tokens)
    if not (MIN_TOKENS <= n_src <= MAX_TOKENS and MIN_TOKENS <= n_tgt <= MAX_TOKENS):
        return False
    if n_src / n_tgt > RATIO or n_tgt / n_src > RATIO:
        return False
    return all(len(token) <= MAX_WORD_LENGTH for token in src_tokens + tgt_tokens)


def same_length(a, b, what):
    if len(a) != len(b):
        raise InputError(f"{what}: {len(a)} German lines but {len(b)} English lines")


def split(orig, out):
    from sacremoses import MosesTokenizer

    prefix = os.path.join(orig, "train.tags.de-en.")
    de, en = train_lines(prefix + SRC), train_lines(prefix + TGT)
    same_length(de, en, prefix + "{de,en} after removing the <url>/<talkid>/<keywords> lines")
    tok_de, tok_en = MosesTokenizer(lang=SRC), MosesTokenizer(lang=TGT)
    cleaned = [(s.lower(), t.lower()) for s, t in zip(de, en)
               if keep_pair(tok_de.tokenize(s, escape=True), tok_en.tokenize(t, escape=True))]
    if not cleaned:
        raise InputError(f"no training pair of {prefix}{{de,en}} survives the classic cleaning")
    valid = [pair for i, pair in enumerate(cleaned, 1) if i % VALID_EVERY == 0]
    train = [pair for i, pair in enumerate(cleaned, 1) if i % VALID_EVERY != 0]
    test = []
    for name in TEST_SETS:
        files = [os.path.join(orig, f"{name}.de-en.{lang}.xml") for lang in (SRC, TGT)]
        segs = [seg_lines(path) for path in files]
        same_length(*segs, f"{files[0]} / {files[1]}")
        test += [(s.lower(), t.lower()) for s, t in zip(*segs)]
    os.makedirs(out, exist_ok=True)
    for split_name, pairs in (("train", train), ("valid", valid), ("test", test)):
        for side, lang in enumerate((SRC, TGT)):
            with open(os.path.join(out, f"{split_name}.{lang}.tmp"), "w", encoding="utf-8", newline="\n") as f:
                f.writelines(pair[side] + "\n" for pair in pairs)
    for split_name in ("train", "valid", "test"):  # complete files only, under their final names
        for lang in (SRC, TGT):
            path = os.path.join(out, f"{split_name}.{lang}")
            os.replace(path + ".tmp", path)
    return {"train_tags_pairs": len(de), "cleaned_pairs": len(cleaned), "dropped_by_cleaning": len(de) - len(cleaned),
            "train": len(train), "valid": len(valid), "test": len(test), "test_sets": list(TEST_SETS)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orig", required=True, help="the unpacked de-en.tgz (train.tags.de-en.de, *.xml, ...)")
    parser.add_argument("--out", required=True, help="where train/valid/test.{de,en} are written")
    parser.add_argument("--report", required=True, help="the JSON report of the counts")
    args = parser.parse_args(argv)
    try:
        report = split(args.orig, args.out)
    except InputError as exc:
        print(f"iwslt14: error: {exc}", file=sys.stderr)
        return 2
    with open(args.report, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"iwslt14: {report['train_tags_pairs']} training pairs, {report['dropped_by_cleaning']} dropped by the "
          f"cleaning; train {report['train']}, valid {report['valid']} (every {VALID_EVERY}rd), test "
          f"{report['test']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
