"""Evaluate trained checkpoints the way the Admin paper reports them (``fairseq-admin-evaluate``, ``scripts/evaluate.sh``).

Steps: (1) average the last N checkpoints (``fairseq-admin-average``; N <= 1 uses ``checkpoint_best.pt``);
(2) run the real ``fairseq-generate`` on the binarized subset; (3) take the ``H-<id>`` hypotheses in the original
sentence order and sentencepiece-decode them; (4) BLEU two ways:

a. sacrebleu (13a tokenization) on the detokenized hypotheses against the raw reference, with its signature; the
   same number that ``sacrebleu REF -i HYP`` prints;
b. the papers' tokenized BLEU (fairseq/Admin ``compound_split_bleu.sh`` / ``get_ende_bleu.sh`` recipe): Moses
   tokenization with aggressive hyphen splitting (``-a``) of hypotheses and reference, compounds put in ATAT format
   (``perl -ple 's{(\\S)-(\\S)}{$1 ##AT##-##AT## $2}g'``), then corpus BLEU on the tokens (``tokenize='none'``, no
   smoothing: what ``multi-bleu.perl`` computes).

With ``--choose-on-valid``, between (1) and (2) the checkpoints (``checkpoint_best.pt`` or the average) and the length
penalty are chosen by sacreBLEU on the validation set (:mod:`fairseq_admin.choose_on_valid`); (2)-(4) then translate
and score the test set once, with that choice.

Everything goes to a JSON file. Every file it writes (the JSON, the generate output, the hypotheses, the average) is
checked before any work, is never one of the inputs (checkpoints, data, model, reference), and is written atomically
(:mod:`fairseq_admin.output_safety`).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from fairseq_admin import output_safety
from fairseq_admin import choose_on_valid

PAIR_DEFAULTS = {  # the Admin paper's decoding and tokenized-BLEU settings
    "en-de": {"beam": 4, "lenpen": 0.6, "aggressive_dash": True, "compound_split": True},
    "en-fr": {"beam": 5, "lenpen": 0.8, "aggressive_dash": True, "compound_split": True},
    # IWSLT14 (data-prep/prepare-iwslt14deen.sh, lowercased as the classic recipe): Transformer-Clinic's
    # eval_iwslt_de-en.sh, fairseq-generate --beam 5 (lenpen 1) scoring the Moses-tokenized text (tokenizer.perl
    # without -a), no compound split
    "de-en": {"beam": 5, "lenpen": 1.0, "aggressive_dash": False, "compound_split": False},
}

_HYPO_RE = re.compile(r"^H-(\d+)\t")
_ATAT_RE = re.compile(r"(\S)-(\S)")


class EvaluationError(RuntimeError):
    """A clear, user-facing error of the evaluation pipeline."""


def log(msg: str) -> None:
    print(f"[evaluate] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# parsing and scoring (pure functions, unit-tested)
# ---------------------------------------------------------------------------------------------------------------------
def parse_generate_output(lines) -> List[str]:
    """Hypotheses (the last tab-separated field of each ``H-<id>`` line) ordered by sentence id.

    Only the first hypothesis per id is kept (``--nbest`` > 1 prints several). Ids must be exactly 0..n-1."""
    hyps: Dict[int, str] = {}
    for line in lines:
        line = line.rstrip("\n")
        m = _HYPO_RE.match(line)
        if not m:
            continue
        idx = int(m.group(1))
        if idx not in hyps:
            fields = line.split("\t")
            hyps[idx] = fields[2] if len(fields) >= 3 else ""
    if not hyps:
        return []
    missing = sorted(set(range(len(hyps))) - set(hyps))
    if missing or max(hyps) != len(hyps) - 1:
        raise EvaluationError(
            f"fairseq-generate output has {len(hyps)} hypotheses but their ids are not 0..{len(hyps) - 1} "
            f"(missing: {missing[:10]}, max id {max(hyps)})"
        )
    return [hyps[i] for i in range(len(hyps))]


def spm_decode(hyps: Sequence[str], spm_model: str) -> List[str]:
    """Sentencepiece-decode space-separated pieces."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=spm_model)
    return [sp.decode_pieces(h.split()) if h.strip() else "" for h in hyps]


def read_lines_like_sacrebleu(path: str) -> List[str]:
    """Read a text file exactly as the sacrebleu CLI does (``\\n`` line ends, trailing whitespace stripped)."""
    with open(path, encoding="utf-8", newline="\n") as f:
        return [line.rstrip() for line in f]


def compound_split(line: str) -> str:
    """``rich-text`` -> ``rich ##AT##-##AT## text`` (perl ``s{(\\S)-(\\S)}{$1 ##AT##-##AT## $2}g``)."""
    return _ATAT_RE.sub(r"\1 ##AT##-##AT## \2", line)


def moses_tokenize(lines: Sequence[str], lang: str, aggressive: bool = True) -> List[str]:
    """Moses tokenization (sacremoses, = ``tokenizer.perl -l LANG [-a]``, with its default escaping)."""
    from sacremoses import MosesTokenizer

    tok = MosesTokenizer(lang=lang)
    return [tok.tokenize(line, aggressive_dash_splits=aggressive, return_str=True, escape=True) for line in lines]


def tokenized_bleu(hyps: Sequence[str], refs: Sequence[str], lang: str, aggressive: bool = True,
                   compound: bool = True) -> Dict:
    """The papers' tokenized BLEU: Moses-tokenize (``-a``), ATAT compound split (``compound``), BLEU on the tokens."""
    from sacrebleu.metrics import BLEU

    if len(hyps) != len(refs):
        raise EvaluationError(f"{len(hyps)} hypotheses but {len(refs)} references")
    split = compound_split if compound else (lambda s: s)
    sys_tok = [split(s) for s in moses_tokenize(hyps, lang, aggressive)]
    ref_tok = [split(s) for s in moses_tokenize(refs, lang, aggressive)]
    metric = BLEU(tokenize="none", smooth_method="none", force=True)
    score = metric.corpus_score(sys_tok, [ref_tok])
    return {"score": score.score, "text": str(score), "signature": str(metric.get_signature())}


def sacrebleu_score(hyps: Sequence[str], refs: Sequence[str]) -> Dict:
    """sacrebleu's default corpus BLEU (13a, exp smoothing) and its signature, as the CLI computes it."""
    from sacrebleu.metrics import BLEU

    if len(hyps) != len(refs):
        raise EvaluationError(f"{len(hyps)} hypotheses but {len(refs)} references")
    metric = BLEU()
    score = metric.corpus_score(list(hyps), [list(refs)])
    return {"score": score.score, "text": str(score), "signature": str(metric.get_signature()),
            "length_ratio": score.sys_len / score.ref_len if score.ref_len else 0.0}


def load_hypotheses_and_references(gen_out: str, spm_model: str, ref: str, subset: str = "test"):
    """Detokenized hypotheses of a fairseq-generate output file (sentence order) and the reference lines;
    raises :class:`EvaluationError` when their counts differ."""
    with open(gen_out, encoding="utf-8") as f:
        pieces = parse_generate_output(f)
    hyps = spm_decode(pieces, spm_model)
    refs = read_lines_like_sacrebleu(ref)
    if len(hyps) != len(refs):
        raise EvaluationError(
            f"fairseq-generate produced {len(hyps)} hypotheses for subset {subset!r} ({gen_out}) but the reference "
            f"{ref} has {len(refs)} lines: is --ref the raw reference of that subset?"
        )
    return hyps, refs


# ---------------------------------------------------------------------------------------------------------------------
# pipeline
# ---------------------------------------------------------------------------------------------------------------------
def select_checkpoints(ckpt_dir: str, num: int, average_by: str = "auto") -> List[str]:
    """The checkpoints to evaluate: the last ``num`` epoch (or update) checkpoints, or for ``num`` <= 1
    ``checkpoint_best.pt`` (else the only ``checkpoint*.pt`` there is)."""
    from fairseq_admin.cli.average_checkpoints import AverageError, last_checkpoints, numbered_checkpoints

    if not os.path.isdir(ckpt_dir):
        raise EvaluationError(f"--checkpoints {ckpt_dir} is not a directory")
    if num <= 1:
        best = os.path.join(ckpt_dir, "checkpoint_best.pt")
        if os.path.isfile(best):
            return [best]
        found = sorted(n for n in os.listdir(ckpt_dir) if n.startswith("checkpoint") and n.endswith(".pt"))
        if len(found) == 1:
            return [os.path.join(ckpt_dir, found[0])]
        raise EvaluationError(f"no checkpoint_best.pt in {ckpt_dir} and not exactly one checkpoint*.pt: {found}")
    if average_by == "auto":
        average_by = "epoch" if numbered_checkpoints(ckpt_dir, "epoch") else "update"
    try:
        return last_checkpoints(ckpt_dir, num, average_by)
    except AverageError as exc:
        raise EvaluationError(str(exc)) from None


def default_user_dir() -> str:
    import fairseq_admin

    return os.path.dirname(os.path.abspath(fairseq_admin.__file__))


def _tool(name: str) -> str:
    """A console script of the running environment (next to its python), else from PATH."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(here):
        return here
    found = shutil.which(name)
    if not found:
        raise EvaluationError(f"{name} not found (next to {sys.executable} or on PATH)")
    return found


def _run(cmd: List[str], stdout_path: Optional[str] = None) -> None:
    log("$ " + " ".join(shlex.quote(c) for c in cmd) + (f" > {stdout_path}" if stdout_path else ""))
    if stdout_path:  # replaced only by the output of a run that succeeded (a failed one keeps the previous file)
        with output_safety.atomic_write(stdout_path) as out:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
            _check_status(cmd, proc)
    else:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.stdout:
            sys.stdout.write(proc.stdout)
        _check_status(cmd, proc)


def _check_status(cmd: List[str], proc: subprocess.CompletedProcess) -> None:
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout or "").strip().splitlines()
        tail = "\n".join(err[-15:])
        raise EvaluationError(f"{os.path.basename(cmd[0])} failed with exit code {proc.returncode}:\n{tail}")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fairseq-admin-evaluate",
        description="Average checkpoints, translate a binarized test set with fairseq-generate and report sacreBLEU "
        "and the papers' tokenized (compound-split) BLEU.",
    )
    p.add_argument("--pair", required=True, choices=sorted(PAIR_DEFAULTS), help="language pair (sets beam/lenpen)")
    p.add_argument("--checkpoints", required=True, metavar="DIR", help="directory with the checkpoints")
    p.add_argument("--data", required=True, metavar="DIR", help="fairseq-preprocess output (data-bin)")
    p.add_argument("--spm", required=True, metavar="MODEL", help="sentencepiece model used to encode the data")
    p.add_argument("--ref", required=True, metavar="FILE", help="raw (untokenized) reference of the subset")
    p.add_argument("--num-checkpoints", type=int, default=10, metavar="N",
                   help="average the last N checkpoints (default 10); 0 or 1: checkpoint_best.pt")
    p.add_argument("--average-by", choices=("auto", "epoch", "update"), default="auto",
                   help="checkpoint<E>.pt (epoch) or checkpoint_<E>_<U>.pt (update); auto: epoch if present")
    p.add_argument("--beam", type=int, default=None, help="beam size (default: en-de 4, en-fr 5, de-en 5)")
    p.add_argument("--lenpen", type=float, default=None,
                   help="length penalty (default: en-de 0.6, en-fr 0.8, de-en 1.0)")
    p.add_argument("--subset", default="test", help="binarized subset to translate (default test)")
    p.add_argument("--out", default=None, metavar="JSON", help="results file (default CHECKPOINTS/eval-SUBSET.json)")
    p.add_argument("--workdir", default=None, metavar="DIR",
                   help="where the averaged checkpoint and generate output go (default: next to --out)")
    p.add_argument("--user-dir", default=None, help="fairseq --user-dir (default: the installed fairseq_admin)")
    p.add_argument("--cpu", action="store_true", help="generate on CPU")
    p.add_argument("--max-tokens", type=int, default=4096, help="fairseq-generate --max-tokens (default 4096)")
    p.add_argument("--generate-args", default="", metavar="ARGS",
                   help="extra fairseq-generate arguments, one shell-quoted string (e.g. '--max-len-b 50')")
    p.add_argument("--no-aggressive-dash", action="store_true",
                   help="tokenized BLEU without Moses -a (get_ende_bleu.sh style) instead of with it (de-en never "
                        "uses -a)")
    g = p.add_argument_group(
        "choosing on the validation set",
        "--choose-on-valid translates --valid-subset with checkpoint_best.pt and (N > 1) the average of the last "
        "--num-checkpoints N, once each (--nbest BEAM serves every length penalty: fairseq_admin/choose_on_valid.py), "
        "scores every length penalty of --grid-lenpens by sacreBLEU against --valid-ref, prints the grid, takes the "
        "best cell (ties: checkpoint_best.pt before the average, then the earlier length penalty) and only then "
        "translates --subset once with it. The test set is never used to choose.")
    g.add_argument("--choose-on-valid", action="store_true",
                   help="choose the checkpoints and the length penalty on the validation set (excludes --lenpen)")
    g.add_argument("--valid-subset", default="valid", help="binarized subset to choose on (default valid)")
    g.add_argument("--valid-ref", default=None, metavar="FILE", help="raw reference of --valid-subset (required)")
    g.add_argument("--grid-lenpens", default=",".join(f"{v:g}" for v in choose_on_valid.DEFAULT_LENPENS),
                   metavar="A,B,...", help="the length penalties of the grid, in tie order (default %(default)s)")
    return p


def split_generate_args(text: str) -> List[str]:
    """``--generate-args`` as a list of arguments (shell quoting), or an :class:`EvaluationError` naming the problem."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise EvaluationError(f"--generate-args {text!r}: {exc} (give one shell-quoted string, e.g. "
                              f"--generate-args '--max-len-b 50')") from None


def check_spm_model(path: str) -> None:
    """Load the sentencepiece model before any work: a file that is not one (a vocabulary, a checkpoint) was found
    out only when the hypotheses were decoded, after the whole translation, as a traceback."""
    import sentencepiece as spm

    try:
        spm.SentencePieceProcessor(model_file=path)
    except (OSError, RuntimeError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise EvaluationError(f"--spm {path} is not a sentencepiece model ({reason})") from None


def generate_command(args: argparse.Namespace, model_path: str, subset: str, beam: int, lenpen: float,
                     extra: Sequence[str] = ()) -> List[str]:
    """The ``fairseq-generate`` command that translates ``subset`` of ``--data`` with ``model_path``."""
    src, tgt = args.pair.split("-")
    user_dir = args.user_dir or default_user_dir()
    cmd = [_tool("fairseq-generate"), args.data, "--path", model_path, "--user-dir", user_dir,
           "--source-lang", src, "--target-lang", tgt, "--gen-subset", subset,
           "--beam", str(beam), "--lenpen", str(lenpen), "--max-tokens", str(args.max_tokens),
           # fairseq's compiled batch_by_size (ve-fairseq 0.12.3) drops the last len % multiple sentences
           # when --required-batch-size-multiple > 1 (default 8): translate every sentence.
           "--required-batch-size-multiple", "1"]
    if args.cpu:
        cmd.append("--cpu")
    return cmd + list(extra)


# fairseq-generate options that would break the re-ranking of one n-best list by each length penalty (module
# docstring of fairseq_admin/choose_on_valid.py: the list must hold all --beam finished hypotheses of plain beam
# search) or override the choice in the test translation
_GRID_CONFLICTS = ("--beam", "--lenpen", "--nbest", "--unnormalized", "--sampling", "--diverse-beam-groups",
                   "--diversity-rate", "--match-source-len", "--prefix-size")


class ValidGrid(NamedTuple):
    """What ``--choose-on-valid`` translates: each candidate ``(label, checkpoints, model path, generate output)``
    once, scored at every length penalty."""

    subset: str
    reference: str
    lenpens: List[float]
    candidates: List[Tuple[str, List[str], str, str]]


def plan_valid_grid(args: argparse.Namespace, ckpts: List[str], model_path: str, workdir: str, stem: str,
                    generate_extra: Sequence[str], outputs: Sequence[Tuple[str, Optional[str]]],
                    inputs: Sequence[str]) -> ValidGrid:
    """The grid of ``--choose-on-valid``, every option and file checked before any work: ``checkpoint_best.pt``,
    then (when ``ckpts`` are several) their average at ``model_path``, x ``--grid-lenpens``. ``outputs`` and
    ``inputs``: the test evaluation's, checked again with the grid's own."""
    src, tgt = args.pair.split("-")
    if args.lenpen is not None:
        raise EvaluationError("--lenpen and --choose-on-valid exclude each other: the validation set chooses the "
                              "length penalty among --grid-lenpens")
    conflicts = [a.split("=")[0] for a in generate_extra if a.split("=")[0] in _GRID_CONFLICTS]
    if conflicts:
        raise EvaluationError(f"--generate-args {conflicts[0]} and --choose-on-valid exclude each other (the grid "
                              f"sets the length penalty; one n-best list of all --beam hypotheses serves every length "
                              f"penalty only in plain beam search; give the beam as --beam)")
    try:
        lenpens = choose_on_valid.parse_float_list(args.grid_lenpens, "--grid-lenpens")
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    if not args.valid_ref:
        raise EvaluationError("--choose-on-valid needs --valid-ref: the raw reference of --valid-subset")
    if not os.path.isfile(args.valid_ref):
        raise EvaluationError(f"--valid-ref {args.valid_ref} not found")
    if args.valid_subset == args.subset or os.path.realpath(args.valid_ref) == os.path.realpath(args.ref):
        raise EvaluationError(f"--valid-subset/--valid-ref name the evaluated set ({args.subset}, {args.ref}): the "
                              f"choice is made on another set, never on the one reported")
    binarized = [os.path.join(args.data, f"{args.valid_subset}.{a}-{b}.{src}.idx") for a, b in ((src, tgt), (tgt, src))]
    if not any(os.path.isfile(p) for p in binarized):
        raise EvaluationError(f"--data {args.data} has no binarized {args.valid_subset!r} subset ({binarized[0]})")
    best = select_checkpoints(args.checkpoints, 1)
    candidates = [(choose_on_valid.checkpoints_label(1), best, best[0])]
    if len(ckpts) > 1:
        candidates.append((choose_on_valid.checkpoints_label(len(ckpts)), ckpts, model_path))
    candidates = [(label, c, path, os.path.join(workdir, f"{stem}.generate-{args.valid_subset}.{label}.txt"))
                  for label, c, path in candidates]
    output_safety.check_outputs([*outputs, *((f"--workdir (generate output, {args.valid_subset} {label})", gen)
                                            for label, _, _, gen in candidates)],
                                [*inputs, *best, args.valid_ref])
    return ValidGrid(args.valid_subset, args.valid_ref, lenpens, candidates)


def run_valid_grid(grid: ValidGrid, args: argparse.Namespace, beam: int, generate_extra: Sequence[str]) -> Dict:
    """Translate the validation set once per candidate (``--nbest BEAM``), score every length penalty, print the
    grid and return it with the choice (:func:`fairseq_admin.choose_on_valid.choose`). The test set is not read."""
    refs = read_lines_like_sacrebleu(grid.reference)
    cells, translations, began = [], {}, time.time()
    for label, ckpts, model_path, gen_out in grid.candidates:
        log(f"validation: {grid.subset} with {label} ({model_path}), beam {beam}, --nbest {beam}: every length "
            f"penalty of {', '.join(map(str, grid.lenpens))} from one translation")
        started = time.time()
        # generated at lenpen 1; the n-best list is the same at every lenpen (choose_on_valid's docstring)
        _run(generate_command(args, model_path, grid.subset, beam, 1.0, [*generate_extra, "--nbest", str(beam)]),
             stdout_path=gen_out)
        translations[label] = {"checkpoints": [os.path.abspath(c) for c in ckpts],
                               "model_path": os.path.abspath(model_path), "generate_output": os.path.abspath(gen_out),
                               "seconds": round(time.time() - started, 1)}
        with open(gen_out, encoding="utf-8") as f:
            try:
                nbest = choose_on_valid.parse_nbest(f, generated_lenpen=1.0)
            except ValueError as exc:
                raise EvaluationError(f"{gen_out}: {exc}") from None
        if len(nbest) != len(refs):
            raise EvaluationError(f"fairseq-generate translated {len(nbest)} sentences of {grid.subset!r} but "
                                  f"--valid-ref {grid.reference} has {len(refs)} lines: is it that subset's reference?")
        for lenpen in grid.lenpens:
            hyps = spm_decode(choose_on_valid.rerank(nbest, lenpen), args.spm)
            sb = sacrebleu_score(hyps, refs)
            cells.append(choose_on_valid.Cell(label, lenpen, sb["score"], sb["length_ratio"], sb["text"]))
    chosen = choose_on_valid.choose(cells)
    seconds = round(time.time() - began, 1)
    log(f"validation grid ({grid.subset}, {len(refs)} sentences, beam {beam}; {seconds:g} s; best: "
        f"checkpoint_best.pt, avgN: the last N checkpoints averaged):")
    for line in choose_on_valid.format_grid(cells, chosen, grid.subset):
        print("  " + line)
    log(f"chosen on {grid.subset}: {chosen.checkpoints}, lenpen {chosen.lenpen} (sacreBLEU {chosen.sacrebleu:.2f}; "
        f"exact ties go to the earlier cell)")
    return {"subset": grid.subset, "reference_file": os.path.abspath(grid.reference), "sentences": len(refs),
            "beam": beam, "grid": [c.as_dict() for c in cells], "choice": chosen.as_dict(),
            "tie_order": choose_on_valid.TIE_ORDER, "translations": translations, "seconds": seconds}


def evaluate(args: argparse.Namespace) -> Dict:
    generate_extra = split_generate_args(args.generate_args)  # before any work
    src, tgt = args.pair.split("-")
    beam = args.beam if args.beam is not None else PAIR_DEFAULTS[args.pair]["beam"]
    lenpen = args.lenpen if args.lenpen is not None else PAIR_DEFAULTS[args.pair]["lenpen"]
    out_json = args.out or os.path.join(args.checkpoints, f"eval-{args.subset}.json")
    workdir = args.workdir or os.path.dirname(os.path.abspath(out_json))
    for path, what in ((args.data, "--data"), (args.checkpoints, "--checkpoints")):
        if not os.path.isdir(path):
            raise EvaluationError(f"{what} {path} is not a directory")
    for path, what in ((args.spm, "--spm"), (args.ref, "--ref")):
        if not os.path.isfile(path):
            raise EvaluationError(f"{what} {path} not found")
    check_spm_model(args.spm)
    stem = os.path.splitext(os.path.basename(out_json))[0]
    ckpts = select_checkpoints(args.checkpoints, args.num_checkpoints, args.average_by)  # file names only
    model_path = ckpts[0] if len(ckpts) == 1 else os.path.join(workdir, f"{stem}.avg{len(ckpts)}.pt")
    gen_out = os.path.join(workdir, f"{stem}.generate-{args.subset}.txt")
    hyp_file = os.path.join(workdir, f"{stem}.hyp.detok.{tgt}")
    # every file written, before any work: none may be an input (--out naming the checkpoint turned it into JSON),
    # a directory, or unwritable; the workdir is created here (output_safety)
    inputs = [*ckpts, args.spm, args.ref, *(os.path.join(args.data, name) for name in os.listdir(args.data))]
    output_safety.check_outputs([("--out", out_json), ("--workdir (generate output)", gen_out),
                                 ("--workdir (hypotheses)", hyp_file),
                                 ("--workdir (average)", model_path if len(ckpts) > 1 else None)], inputs)
    grid = plan_valid_grid(args, ckpts, model_path, workdir, stem, generate_extra,
                           [("--out", out_json), ("--workdir (generate output)", gen_out),
                            ("--workdir (hypotheses)", hyp_file)], inputs) if args.choose_on_valid else None

    log(f"step 1/4: checkpoints (last {args.num_checkpoints} of {args.checkpoints})")
    if len(ckpts) == 1:
        log(f"using {model_path}")
    else:
        _run([sys.executable, "-m", "fairseq_admin.cli.average_checkpoints", "--inputs", *ckpts,
              "--output", model_path])
    chosen_on_valid = None
    if grid is not None:  # the choice, on the validation set; the test set is translated after it, once
        chosen_on_valid = run_valid_grid(grid, args, beam, generate_extra)
        _, ckpts, model_path, _ = next(c for c in grid.candidates if c[0] == chosen_on_valid["choice"]["checkpoints"])
        lenpen = chosen_on_valid["choice"]["lenpen"]
        log(f"using the choice: {model_path}, lenpen {lenpen}")

    log(f"step 2/4: fairseq-generate on {args.subset} (beam {beam}, lenpen {lenpen})")
    gen_cmd = generate_command(args, model_path, args.subset, beam, lenpen, generate_extra)
    _run(gen_cmd, stdout_path=gen_out)

    log("step 3/4: hypotheses (H-<id> in sentence order), sentencepiece-decoded")
    hyps, refs = load_hypotheses_and_references(gen_out, args.spm, args.ref, args.subset)
    with output_safety.atomic_write(hyp_file) as f:
        f.writelines(h + "\n" for h in hyps)
    log(f"{len(hyps)} hypotheses -> {hyp_file}")

    log("step 4/4: BLEU")
    sb = sacrebleu_score(hyps, refs)
    aggressive = PAIR_DEFAULTS[args.pair]["aggressive_dash"] and not args.no_aggressive_dash
    compound = PAIR_DEFAULTS[args.pair]["compound_split"]
    tb = tokenized_bleu(hyps, refs, tgt, aggressive=aggressive, compound=compound)
    recipe = ("Moses tokenizer.perl -l {l}{a} (sacremoses), {c}multi-bleu (sacrebleu tokenize=none, no smoothing)"
              ).format(l=tgt, a=" -a" if aggressive else "",
                       c="ATAT compound split s{(\\S)-(\\S)}{$1 ##AT##-##AT## $2}g, " if compound else "")
    print(f"sacreBLEU: {sb['score']:.2f}  ({sb['text']})")
    print(f"sacreBLEU signature: {sb['signature']}")
    print(f"tokenized BLEU{' (compound split)' if compound else ''}: {tb['score']:.2f}  ({tb['text']})")
    result = {
        "pair": args.pair,
        "subset": args.subset,
        "sacrebleu": sb["score"],
        "sacrebleu_signature": sb["signature"],
        "sacrebleu_text": sb["text"],
        "tokenized_bleu": tb["score"],
        "tokenized_bleu_text": tb["text"],
        "tokenized_bleu_recipe": recipe,
        "beam": beam,
        "lenpen": lenpen,
        "checkpoints": [os.path.abspath(c) for c in ckpts],
        "model_path": os.path.abspath(model_path),
        "averaged": len(ckpts) > 1,
        "generate_command": " ".join(shlex.quote(c) for c in gen_cmd),
        "generate_output": os.path.abspath(gen_out),
        "hypotheses_file": os.path.abspath(hyp_file),
        "reference_file": os.path.abspath(args.ref),
        "num_hypotheses": len(hyps),
        "num_references": len(refs),
    }
    if chosen_on_valid is not None:
        result["chosen_on_valid"] = chosen_on_valid  # the grid, each cell's validation BLEU, and the choice
    with output_safety.atomic_write(out_json) as f:
        json.dump(result, f, indent=2, ensure_ascii=False)
        f.write("\n")
    log(f"wrote {out_json}")
    return result


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        evaluate(args)
    except (EvaluationError, output_safety.OutputPathError) as exc:
        print(f"fairseq-admin-evaluate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
