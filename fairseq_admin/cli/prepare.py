"""Data-preparation helpers behind ``data-prep/*.sh`` (console script ``fairseq-admin-prepare``).

The shell scripts own the pipeline (download, stages, ``fairseq-preprocess``); this module owns everything that
touches text, because doing it in Python once is easier to test than sed/perl one-liners in several scripts.

Every command streams its inputs line by line (corpora such as Giga-fren do not fit in memory), reads ``.gz``
files transparently, and fails with a message that names the file and, where it applies, the line:

    sgm2txt      WMT sgm test sets -> plain text (entities unescaped, order kept, src/ref counts checked)
    clean        normalize + filter parallel training text, write a JSON report of what was dropped and why
    spm-train    joint sentencepiece BPE model on both languages, on a bounded random sample of sentences
    spm-encode   apply the model, keeping line counts equal
    check-lines  assert that files have equal line counts

Normalization (``normalize``), applied identically to train, valid and test source text:
  1. unescape the XML/HTML entities that tokenizers and sgm files produce (``&amp; &lt; &gt; &quot; &apos;``
     and numeric ``&#91;``/``&#x5b;``) -- only these, so a bare ``S&P`` or ``&para`` is left alone;
  2. Unicode NFKC (full-width forms, ligatures, compatibility spaces such as U+00A0 become plain ones);
  3. control characters (Cc) and other spaces (Zs, U+2028/9) become a space, format characters (Cf: zero-width
     spaces, BOMs, soft hyphens, bidi marks) are removed;
  4. runs of whitespace collapse to one space, leading/trailing whitespace is stripped.

Filtering (``clean``; the defaults are those fairseq's prepare-wmt14 scripts pass to Moses
``clean-corpus-n.perl -ratio 1.5 ... 1 250``, but counted on whitespace-separated words of the normalized text):
a pair is dropped, for the first reason that applies, if either side is ``empty``, either side has more than
``--max-len`` words (``too_long``), or one side has more than ``--ratio`` times as many words as the other
(``ratio``). ``--max-len 0`` / ``--ratio 0`` disable those filters.
"""
import argparse
import gzip
import json
import os
import re
import sys
import tempfile
import unicodedata
from contextlib import ExitStack

if __package__:  # fairseq-admin-prepare, python -m, the tests
    from fairseq_admin import output_safety
else:  # data-prep/lib.sh runs this file by path: importing the package would import fairseq (slow) for nothing
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "fairseq_admin_output_safety", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                    "output_safety.py"))
    output_safety = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(output_safety)


class PrepareError(Exception):
    """A data problem the user must fix; reported as one clear line, without a traceback."""


# --------------------------------------------------------------------------------------------------- reading


def open_text_lines(path):
    """Yield ``(line_number, text)`` for each line of ``path`` (plain or ``.gz``), without the newline.

    Decoding is done per line so an invalid byte is reported with its line number, and a truncated ``.gz``
    (EOFError / BadGzipFile deep inside gzip) becomes a PrepareError naming the file.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise PrepareError(f"{path}: line {number}: invalid UTF-8 ({e.reason} at byte {e.start})")
                yield number, text.rstrip("\r\n")
    except FileNotFoundError:
        raise PrepareError(f"{path}: no such file")
    except (EOFError, gzip.BadGzipFile, OSError) as e:
        if isinstance(e, PrepareError):
            raise
        raise PrepareError(f"{path}: unreadable or truncated compressed file ({e})")


def count_lines(path):
    """Number of lines of ``path`` (streamed)."""
    n = 0
    for n, _ in open_text_lines(path):
        pass
    return n


def read_parallel(src_path, tgt_path):
    """Yield ``(src, tgt)`` line pairs; raise PrepareError naming both files and counts if lengths differ."""
    src_iter, tgt_iter = open_text_lines(src_path), open_text_lines(tgt_path)
    n = 0
    while True:
        s, t = next(src_iter, None), next(tgt_iter, None)
        if s is None or t is None:
            if s is None and t is None:
                return
            # finish counting the longer file so the message gives both real counts
            n_src = n + (0 if s is None else 1 + sum(1 for _ in src_iter))
            n_tgt = n + (0 if t is None else 1 + sum(1 for _ in tgt_iter))
            raise PrepareError(
                f"line count mismatch: {src_path} has {n_src} lines but {tgt_path} has {n_tgt} lines"
            )
        n += 1
        yield s[1], t[1]


def write_lines(handle, lines):
    for line in lines:
        handle.write(line)
        handle.write("\n")


def open_out(path):
    """A UTF-8, LF output file (its directory created) that replaces ``path`` only when the ``with`` block ends
    without an error: a failed or interrupted command leaves the previous file (output_safety.atomic_write). Check
    ``path`` with :func:`check_outputs` before reading any input."""
    return output_safety.atomic_write(path)


def check_outputs(outputs, inputs):
    """Before any input is read: no output (``(option, path)`` pairs) is an input, a directory or unwritable, and no
    two are the same file. An output naming an input would be emptied when it is opened, before the input is read."""
    output_safety.check_outputs(outputs, inputs)


# --------------------------------------------------------------------------------------------- normalizing

_ENTITY_RE = re.compile(r"&(amp|lt|gt|quot|apos|#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6});")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_SPACE_RE = re.compile(r"\s+")


def _entity(match):
    name = match.group(1)
    if name in _NAMED:
        return _NAMED[name]
    try:
        code = int(name[2:], 16) if name[1] in "xX" else int(name[1:])
        return chr(code)
    except (ValueError, OverflowError):
        return match.group(0)


def unescape_entities(text):
    """Undo XML escaping (``&apos;`` -> ``'``) but leave bare ampersands such as ``S&P`` untouched.

    ``html.unescape`` is deliberately not used: it also expands semicolon-less legacy names (``&para``),
    which would corrupt raw text such as ``R&paragraph``.
    """
    return _ENTITY_RE.sub(_entity, text) if "&" in text else text


def _char_map(ch):
    cat = unicodedata.category(ch)
    if cat == "Cf":
        return ""
    if cat in ("Cc", "Zs", "Zl", "Zp"):
        return " "
    return ch


def normalize(text, unescape=True):
    """Normalize one line as described in the module docstring (entities, NFKC, control/space chars)."""
    if unescape:
        text = unescape_entities(text)
    text = unicodedata.normalize("NFKC", text)
    if not text.isascii() or any(ord(c) < 32 or ord(c) == 127 for c in text):
        text = "".join(_char_map(c) for c in text)
    return _SPACE_RE.sub(" ", text).strip()


def drop_reason(src, tgt, max_len=250, ratio=1.5):
    """Why a normalized pair is filtered out (``"empty"``, ``"too_long"``, ``"ratio"``), or None to keep it."""
    if not src or not tgt:
        return "empty"
    n_src, n_tgt = len(src.split(" ")), len(tgt.split(" "))
    if max_len and (n_src > max_len or n_tgt > max_len):
        return "too_long"
    if ratio and (n_src > ratio * n_tgt or n_tgt > ratio * n_src):
        return "ratio"
    return None


def clean_corpus(pairs, src_out, tgt_out, max_len=250, ratio=1.5, filter_pairs=True, unescape=True):
    """Normalize and filter ``pairs`` = [(src_path, tgt_path), ...] into two output files; return the report.

    With ``filter_pairs=False`` nothing is dropped (valid/test sets must keep every line so that outputs stay
    aligned with their references); only normalization is applied.
    """
    check_outputs([("--src-out", src_out), ("--tgt-out", tgt_out)], [path for pair in pairs for path in pair])
    report = {"total": 0, "kept": 0, "dropped": {"empty": 0, "too_long": 0, "ratio": 0}, "inputs": []}
    with open_out(src_out) as fs, open_out(tgt_out) as ft:
        for src_path, tgt_path in pairs:
            entry = {"src": src_path, "tgt": tgt_path, "total": 0, "kept": 0}
            for src, tgt in read_parallel(src_path, tgt_path):
                entry["total"] += 1
                src, tgt = normalize(src, unescape), normalize(tgt, unescape)
                reason = drop_reason(src, tgt, max_len, ratio) if filter_pairs else None
                if reason:
                    report["dropped"][reason] += 1
                    continue
                entry["kept"] += 1
                fs.write(src + "\n")
                ft.write(tgt + "\n")
            report["inputs"].append(entry)
            report["total"] += entry["total"]
            report["kept"] += entry["kept"]
        inputs = ", ".join(f"{p[0]} / {p[1]}" for p in pairs)  # refused inside the with: no output is replaced
        if report["total"] == 0:
            raise PrepareError(f"{inputs}: no lines (empty files); every split needs at least one sentence pair")
        if report["kept"] == 0:
            d = report["dropped"]
            raise PrepareError(f"{inputs}: every one of the {report['total']} pairs was filtered out (empty "
                               f"{d['empty']}, too_long {d['too_long']}, ratio {d['ratio']}); nothing is left to "
                               f"train on")
    report.update(max_len=max_len, ratio=ratio, filtered=filter_pairs, src_out=src_out, tgt_out=tgt_out)
    return report


# ------------------------------------------------------------------------------------------------------ sgm

_SEG_RE = re.compile(r"<seg\b[^>]*>(.*?)</seg>\s*$", re.IGNORECASE)
_SET_END_RE = re.compile(r"</(srcset|refset|tstset)>", re.IGNORECASE)


def read_sgm(path):
    """Return the segment texts of a WMT sgm file, in file order, entities unescaped.

    Whitespace runs collapse to one space and ends are stripped, as sacrebleu does when it extracts the same
    sets, so the references here are byte-identical to the ones sacrebleu scores against.

    WMT sgm puts one ``<seg id=..>text</seg>`` per line. A ``<seg`` line without its ``</seg>`` or a file that
    never closes its ``</srcset>``/``</refset>`` means the file is corrupt or truncated: fail rather than
    silently return fewer (or merged) segments.
    """
    segs, closed = [], False
    for number, line in open_text_lines(path):
        if "<seg" in line.lower():
            m = _SEG_RE.search(line)
            if not m:
                raise PrepareError(
                    f"{path}: line {number}: <seg> without matching </seg> (corrupt or truncated sgm)"
                )
            segs.append(_SPACE_RE.sub(" ", unescape_entities(m.group(1))).strip())
        elif _SET_END_RE.search(line):
            closed = True
    if not closed:
        raise PrepareError(f"{path}: no closing </srcset> or </refset>: file is truncated")
    if not segs:
        raise PrepareError(f"{path}: no <seg> elements found")
    return segs


def sgm_to_text(src_sgm, ref_sgm, src_out, ref_out):
    """Extract a source/reference sgm pair to aligned text files; their segment counts must match."""
    check_outputs([("src_out", src_out), ("ref_out", ref_out)], [src_sgm, ref_sgm])
    src, ref = read_sgm(src_sgm), read_sgm(ref_sgm)
    if len(src) != len(ref):
        raise PrepareError(
            f"segment count mismatch: {src_sgm} has {len(src)} segments but {ref_sgm} has {len(ref)}"
        )
    with open_out(src_out) as fs, open_out(ref_out) as fr:
        write_lines(fs, src)
        write_lines(fr, ref)
    return len(src)


# -------------------------------------------------------------------------------------------- sentencepiece


def spm_train(inputs, model_prefix, vocab_size, max_sentences=10_000_000, character_coverage=1.0,
              threads=1, seed=1):
    """Train one joint BPE model on all ``inputs`` (both languages), so source and target share a vocabulary.

    sentencepiece reads at most ``max_sentences`` randomly chosen sentences (``input_sentence_size`` with
    ``shuffle_input_sentence``), so a 40M-line En-Fr corpus is never loaded whole. ``hard_vocab_limit=False``
    lets a small test corpus produce a slightly smaller vocabulary instead of failing.
    """
    import sentencepiece as spm

    for option, value in (("--vocab-size", vocab_size), ("--threads", threads), ("--max-sentences", max_sentences)):
        if value < 1:
            raise PrepareError(f"spm-train: {option} must be a positive integer, got {value}")
    for path in inputs:
        if not os.path.isfile(path):
            raise PrepareError(f"{path}: no such file")
    model, vocab = model_prefix + ".model", model_prefix + ".vocab"
    check_outputs([("--model-prefix", model), ("--model-prefix", vocab)], inputs)
    if not any(line.strip() for path in inputs for _, line in open_text_lines(path)):
        raise PrepareError(f"{', '.join(inputs)}: no text to train sentencepiece on (the files are empty)")
    spm.set_random_generator_seed(seed)
    # sentencepiece writes PREFIX.model and PREFIX.vocab itself: train into a temporary directory beside them and
    # move both into place (the model last: data-prep's stage check looks for it), so a failure replaces neither
    with tempfile.TemporaryDirectory(prefix=".spm-train.", dir=os.path.dirname(os.path.abspath(model))) as tmp:
        spm.SentencePieceTrainer.train(
            input=",".join(inputs),
            model_prefix=os.path.join(tmp, "spm"),
            vocab_size=vocab_size,
            model_type="bpe",
            character_coverage=character_coverage,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            hard_vocab_limit=False,
            num_threads=threads,
            minloglevel=1,
        )
        output_safety.move_into_place(os.path.join(tmp, "spm.vocab"), vocab)
        output_safety.move_into_place(os.path.join(tmp, "spm.model"), model)
    got = spm.SentencePieceProcessor(model_file=model).get_piece_size()
    if got < vocab_size:  # hard_vocab_limit=False stops, silently, where the text has no more pieces to merge
        print(f"fairseq-admin-prepare: warning: spm-train: asked for --vocab-size {vocab_size}, got {got} pieces "
              f"(all that the training text allows) in {model}", file=sys.stderr, flush=True)
    return model


def spm_encode(model, inputs, outputs, batch=2000):
    """Encode each input file into the matching output file as space-separated pieces, streamed in batches.

    All inputs must have the same line count (they are the two sides of one split): checked before writing.
    """
    import sentencepiece as spm

    if len(inputs) != len(outputs):
        raise PrepareError(f"spm-encode: {len(inputs)} inputs but {len(outputs)} outputs")
    check_outputs([("--outputs", path) for path in outputs], [model, *inputs])
    check_lines(inputs)
    sp = spm.SentencePieceProcessor(model_file=model)
    for src, dst in zip(inputs, outputs):
        n_in = n_out = 0
        with open_out(dst) as out:
            chunk = []
            for _, line in open_text_lines(src):
                n_in += 1
                chunk.append(line)
                if len(chunk) >= batch:
                    n_out += _encode_chunk(sp, chunk, out)
                    chunk = []
            n_out += _encode_chunk(sp, chunk, out)
        if n_in != n_out:  # cannot happen unless a piece contains a newline; keep the invariant explicit
            raise PrepareError(f"spm-encode: {src} has {n_in} lines but {dst} got {n_out}")


def _encode_chunk(sp, chunk, out):
    if not chunk:
        return 0
    for pieces in sp.encode(chunk, out_type=str):
        out.write(" ".join(pieces) + "\n")
    return len(chunk)


def check_lines(paths):
    """Raise PrepareError listing every file and its line count unless all counts are equal."""
    counts = [(p, count_lines(p)) for p in paths]
    if len({n for _, n in counts}) > 1:
        detail = ", ".join(f"{p} has {n}" for p, n in counts)
        raise PrepareError(f"line count mismatch: {detail}")
    return counts[0][1] if counts else 0


# ---------------------------------------------------------------------------------------------------- CLI


def build_parser():
    p = argparse.ArgumentParser(prog="fairseq-admin-prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sgm2txt", help="extract a WMT sgm source/reference pair to aligned text files")
    s.add_argument("src_sgm")
    s.add_argument("ref_sgm")
    s.add_argument("src_out")
    s.add_argument("ref_out")

    c = sub.add_parser("clean", help="normalize and filter parallel text, with a drop report")
    c.add_argument("--pair", nargs=2, action="append", required=True, metavar=("SRC", "TGT"),
                   help="input file pair (plain or .gz); repeat to concatenate corpora")
    c.add_argument("--src-out", required=True)
    c.add_argument("--tgt-out", required=True)
    c.add_argument("--report", help="write the JSON report (counts per drop reason) here")
    c.add_argument("--max-len", type=int, default=250, help="max words per side; 0 disables (default 250)")
    c.add_argument("--ratio", type=float, default=1.5, help="max word-count ratio; 0 disables (default 1.5)")
    c.add_argument("--no-filter", action="store_true",
                   help="normalize only, keep every line (for valid/test sets)")
    c.add_argument("--no-unescape", action="store_true", help="do not unescape &amp; &apos; ... entities")

    t = sub.add_parser("spm-train", help="train a joint sentencepiece BPE model")
    t.add_argument("--input", nargs="+", required=True)
    t.add_argument("--model-prefix", required=True)
    t.add_argument("--vocab-size", type=int, required=True)
    t.add_argument("--max-sentences", type=int, default=10_000_000,
                   help="sample at most this many sentences (default 10M)")
    t.add_argument("--character-coverage", type=float, default=1.0)
    t.add_argument("--threads", type=int, default=1)

    e = sub.add_parser("spm-encode", help="encode files with a sentencepiece model")
    e.add_argument("--model", required=True)
    e.add_argument("--inputs", nargs="+", required=True)
    e.add_argument("--outputs", nargs="+", required=True)

    k = sub.add_parser("check-lines", help="fail unless all files have the same number of lines")
    k.add_argument("files", nargs="+")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "sgm2txt":
        n = sgm_to_text(args.src_sgm, args.ref_sgm, args.src_out, args.ref_out)
        print(f"sgm2txt: {n} segments -> {args.src_out}, {args.ref_out}")
    elif args.command == "clean":
        check_outputs([("--src-out", args.src_out), ("--tgt-out", args.tgt_out), ("--report", args.report)],
                      [path for pair in args.pair for path in pair])
        report = clean_corpus([tuple(p) for p in args.pair], args.src_out, args.tgt_out, args.max_len,
                              args.ratio, filter_pairs=not args.no_filter, unescape=not args.no_unescape)
        if args.report:
            with open_out(args.report) as f:
                json.dump(report, f, indent=2)
                f.write("\n")
        d = report["dropped"]
        print(f"clean: kept {report['kept']} of {report['total']} pairs "
              f"(dropped: empty {d['empty']}, too_long {d['too_long']}, ratio {d['ratio']})")
    elif args.command == "spm-train":
        model = spm_train(args.input, args.model_prefix, args.vocab_size, args.max_sentences,
                          args.character_coverage, args.threads)
        print(f"spm-train: wrote {model}")
    elif args.command == "spm-encode":
        spm_encode(args.model, args.inputs, args.outputs)
        print(f"spm-encode: wrote {', '.join(args.outputs)}")
    elif args.command == "check-lines":
        n = check_lines(args.files)
        print(f"check-lines: {len(args.files)} files, {n} lines each")


def cli_main(argv=None):
    """Console entry point: data errors exit 1 with one ``error:`` line instead of a traceback."""
    try:
        main(argv)
    except (PrepareError, output_safety.OutputPathError) as e:
        print(f"fairseq-admin-prepare: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli_main()
