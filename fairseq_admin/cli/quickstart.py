"""What ``scripts/quickstart.sh`` shows: training progress with the time left, then examples, BLEU and curves.

``progress`` filters fairseq-train's output (``--log-format simple``): every line passes through unchanged, and after
each ``train_inner`` line it prints one more, e.g.::

    [quickstart] update 150/900 (17%) | 0.44 updates/s | 6 min elapsed | about 28 min left

The rate is measured over this process's own lines (a resumed run counts from where it resumed; the first line
uses the run's average, start-up included); with
``--stop-minutes`` the time left is the smaller of the update budget's and the time budget's.

``report`` reads the training logs and evaluation results (``fairseq-admin-evaluate``'s JSON) of one or more runs and
prints a handful of test sentences (source, reference, each run's translation), each run's sacreBLEU with its
signature, and writes one PNG of the training and validation loss curves of all runs (``--png``).
"""
import argparse
import math
import os
import re
import sys
import textwrap

from fairseq_admin import output_safety
from fairseq_admin.errors import OptionError

TRAIN_INNER = re.compile(r"\| train_inner \|.*\bnum_updates=(\d+).*\bwall=(\d+)")
TRAIN_INNER_LOSS = re.compile(r"\| train_inner \|.*\bnll_loss=([-\d.e+inf]+).*\bnum_updates=(\d+)")
VALID = re.compile(r"\| valid \|.*\| nll_loss ([-\d.e+inf]+) \|.*\| num_updates (\d+)")
EXAMPLE_COUNT = 5


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


class Progress:
    """Turns fairseq-train's ``train_inner`` lines into progress lines with updates/s and the time left."""

    def __init__(self, max_update: int, stop_minutes: float = 0.0):
        self.max_update = max_update  # 0: no update limit
        self.stop_seconds = 60.0 * stop_minutes
        self.first = None  # (update, wall) of this process's first train_inner line

    def line(self, text: str):
        m = TRAIN_INNER.search(text)
        if not m:
            return None
        update, wall = int(m.group(1)), float(m.group(2))
        if self.first is None or update < self.first[0]:
            self.first = (update, wall)
        # the rate since this process's first line; on that line itself, the run's average (start-up included)
        base = (0, 0.0) if update == self.first[0] else self.first
        done, took = update - base[0], wall - base[1]
        rate = done / took if took > 0 else math.inf
        left = math.inf
        if self.max_update:
            left = (self.max_update - update) / rate if rate > 0 else math.inf
        if self.stop_seconds:
            left = min(left, max(0.0, self.stop_seconds - wall))
        where = f"update {update}/{self.max_update} ({100.0 * update / self.max_update:.0f}%)" if self.max_update \
            else f"update {update}"
        return f"[quickstart] {where} | {rate:.2f} updates/s | {_minutes(wall)} elapsed | about {_minutes(left)} left"


def run_progress(args) -> int:
    progress = Progress(args.max_update, args.stop_minutes)
    for text in sys.stdin:  # read to the end whatever happens, so that fairseq-train never sees a closed pipe
        sys.stdout.write(text)
        extra = progress.line(text)
        if extra:
            sys.stdout.write(extra + "\n")
        sys.stdout.flush()
    return 0


def read_curves(log_path: str):
    """(train, valid): lists of (update, nll_loss in bits) from a fairseq-train log in the simple format; a
    resumed run's repeated updates keep their last value."""
    train, valid = {}, {}
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for text in f:
            m = TRAIN_INNER_LOSS.search(text)
            if m:
                train[int(m.group(2))] = float(m.group(1))
                continue
            m = VALID.search(text)
            if m:
                valid[int(m.group(2))] = float(m.group(1))
    return sorted(train.items()), sorted(valid.items())


def _lines(path: str):
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def parse_run(text: str):
    """``LABEL=LOG=RESULTS_JSON`` (RESULTS_JSON may be empty: a run without evaluation)."""
    parts = text.split("=", 2)
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError(f"--run must be LABEL=TRAIN_LOG=RESULTS_JSON, got {text!r}")
    return tuple(parts)


def check_report_inputs(args):
    """Every file the report reads exists and the translations line up with the references: one line each."""
    import json

    for path in [args.source, args.reference] + [p for _, log, res in args.run for p in (log, res) if p]:
        if not os.path.isfile(path):
            raise OptionError(f"{path} does not exist")
    sources, references = _lines(args.source), _lines(args.reference)
    if len(sources) != len(references):
        raise OptionError(f"{args.source} has {len(sources)} lines, {args.reference} "
                          f"{len(references)}")
    results = {}
    for label, _, res in args.run:
        if not res:
            continue
        with open(res, encoding="utf-8") as f:
            r = json.load(f)
        hyp = r.get("hypotheses_file")
        if not hyp or not os.path.isfile(hyp):
            raise OptionError(f"{res} names no hypotheses file that exists ({hyp!r})")
        hyps = _lines(hyp)
        if len(hyps) != len(sources):
            raise OptionError(f"{hyp} has {len(hyps)} lines, {args.source} {len(sources)}")
        results[label] = (r, hyps)
    read = [args.source, args.reference] + [p for _, log, res in args.run for p in (log, res) if p] + \
        [r["hypotheses_file"] for r, _ in results.values()]
    output_safety.check_output(args.png, read, "--png")  # an input, a directory, unwritable: refused before the work
    return sources, references, results


def example_indices(n: int, count: int = EXAMPLE_COUNT):
    """``count`` sentence numbers spread evenly over the test set (the same ones on every run)."""
    if n <= count:
        return list(range(n))
    return [round(i * (n - 1) / (count - 1)) for i in range(count)]


def plot_curves(runs, png: str, title: str) -> None:
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fairseq_admin.diagnostics import scheme_color

    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    for label, log, _ in runs:
        train, valid = read_curves(log)
        color = scheme_color(label.split()[0])
        if train:
            ax.plot(*zip(*train), color=color, lw=1, alpha=0.6, label=f"{label}: train")
        if valid:
            ax.plot(*zip(*valid), color=color, marker="o", ms=3, lw=1.8, label=f"{label}: validation")
    ax.set(xlabel="update", ylabel="nll loss (bits per target token)")
    ax.set_title(textwrap.fill(title, 90), fontsize=9)  # wrapped: the setting is one long line
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with output_safety.atomic_write(png, "wb") as f:  # a failed run keeps the previous PNG
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


def choice_lines(label: str, result) -> list:
    """The validation grid of a run's evaluation (``fairseq-admin-evaluate --choose-on-valid``'s ``chosen_on_valid``)
    and its choice, as printed lines; none for an evaluation that chose nothing."""
    from fairseq_admin.choose_on_valid import Cell, format_grid

    chosen = result.get("chosen_on_valid")
    if not chosen:
        return []
    cells = [Cell(**cell) for cell in chosen["grid"]]
    choice = Cell(**chosen["choice"])
    lines = [f"{label}: validation grid ({chosen['subset']}, {chosen['sentences']} sentences, beam {chosen['beam']}; "
             f"best: checkpoint_best.pt, avgN: the last N checkpoints averaged):"]
    lines += ["  " + line for line in format_grid(cells, choice, chosen["subset"])]
    lines.append(f"{label}: chosen on {chosen['subset']}: {choice.checkpoints}, lenpen {choice.lenpen}; the test set "
                 f"translated once, with it:")
    return lines


def run_report(args) -> int:
    sources, references, results = check_report_inputs(args)
    print(f"\nExamples from {os.path.basename(args.source)} (sentence numbers spread over the test set):")
    for i in example_indices(len(sources)):
        print(f"\n  [{i + 1}] source:     {sources[i]}")
        print(f"      reference:  {references[i]}")
        for label, (_, hyps) in results.items():
            print(f"      {label + ':':<11} {hyps[i]}")
    print()
    for label, (r, _) in results.items():
        for line in choice_lines(label, r):
            print(line)
        print(f"{label}: sacreBLEU {r['sacrebleu']:.2f} ({r['sacrebleu_signature']}); "
              f"tokenized BLEU {r['tokenized_bleu']:.2f}")
        print(f"  {r['sacrebleu_text']}")
    plot_curves(args.run, args.png, args.title)
    print(f"training and validation curves: {args.png}")
    return 0


def make_parser():
    p = argparse.ArgumentParser(prog="python -m fairseq_admin.cli.quickstart", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("progress", help="filter fairseq-train's output, adding progress lines")
    g.add_argument("--max-update", type=int, default=0, help="the run's update limit (0: none)")
    g.add_argument("--stop-minutes", type=float, default=0.0)
    r = sub.add_parser("report", help="examples, BLEU with signature, PNG of the curves")
    r.add_argument("--run", type=parse_run, action="append", required=True,
                   help="LABEL=TRAIN_LOG=RESULTS_JSON, once per run (LABEL starts with the scheme: its colour)")
    r.add_argument("--source", required=True, help="the test set's source text, one sentence a line")
    r.add_argument("--reference", required=True, help="the test set's reference translations")
    r.add_argument("--png", required=True, help="where the curves go")
    r.add_argument("--title", default="", help="the plot's title")
    return p


def cli_main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    if args.command == "progress":
        if args.max_update < 0 or args.stop_minutes < 0 or not (args.max_update or args.stop_minutes):
            raise OptionError("--max-update and --stop-minutes must be >= 0, and one of them > 0")
        return run_progress(args)
    return run_report(args)


if __name__ == "__main__":
    sys.exit(cli_main())  # importing fairseq_admin installed its one-line errors (checkpoint_safety.install)
