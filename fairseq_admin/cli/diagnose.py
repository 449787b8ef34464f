"""``fairseq-admin-diagnose``: the papers' stability measurements for every (scheme, depth), in one run.

    fairseq-admin-diagnose --arch transformer_wmt_en_de --schemes postln,preln,admin,b2t --layers 6,12,18 \\
        --synthetic-batch --batch-size 8 --src-len 20 --tgt-len 20 --out-json diag.json --plot-dir plots/

Any other argument is handed to fairseq's own parser (``--dropout 0``, ``--encoder-embed-dim 64``, ...). For each
scheme and depth (encoder and decoder layers = depth) the model is built with seed ``--seed``, Admin is profiled on
the batch (train mode, as training does), then in eval mode (no dropout; ``--train-mode`` keeps it) the script
measures (see fairseq_admin/diagnostics.py for the definitions): (a) per-layer weight-gradient norms and the last FFN's,
(b) the output change under a relative random perturbation of the layer weights, (c) the residual dependency β per
sublayer, and ω where the scheme has it. Writes ``--out-json``, one PNG per measurement in ``--plot-dir``, prints a
table.
"""
import argparse
import importlib.util
import json
import math
import os
import sys
import textwrap
import time

from fairseq_admin import output_safety
from fairseq_admin._lazy import LazyModule

torch = LazyModule("torch")  # imported on first use: --help comes at once

USAGE_EXAMPLE = __doc__.split("\n\n")[1]


class DiagnoseError(ValueError):
    """A user-facing error: printed without a traceback, exit status 2."""


def build_parser():
    p = argparse.ArgumentParser(
        prog="fairseq-admin-diagnose", description=__doc__.split("\n\n")[0],
        epilog="Unrecognized arguments go to fairseq's parser (model options). Example:\n" + USAGE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="transformer_wmt_en_de",
                   help="fairseq base architecture; the model is <scheme>_<arch> (default transformer_wmt_en_de)")
    p.add_argument("--schemes", help="comma list of registered schemes (default: all of them; "
                                     "fairseq-admin-options lists them)")
    p.add_argument("--layers", default="6,12,18", help="comma list of depths (encoder = decoder layers)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="fairseq data-bin directory: take the batch from its --split")
    src.add_argument("--synthetic-batch", action="store_true", help="random tokens (the default without --data)")
    p.add_argument("--split", default="train", help="with --data: the split to sample from (default train)")
    p.add_argument("--batch-size", type=int, default=8, help="sentences in the batch (default 8)")
    p.add_argument("--src-len", type=int, default=20, help="synthetic: max source length (default 20)")
    p.add_argument("--tgt-len", type=int, default=20, help="synthetic: max target length (default 20)")
    p.add_argument("--vocab-size", type=int, default=1000, help="synthetic: dictionary size (default 1000)")
    p.add_argument("--max-len", type=int, default=128, help="with --data: only sentences up to this length")
    p.add_argument("--label-smoothing", type=float, default=0.1, help="of the loss for (a); 0 = plain CE")
    p.add_argument("--perturbation", type=float, default=0.01,
                   help="(b): δ = this × rms(W) × N(0,1) for every layer weight matrix W (default 0.01)")
    p.add_argument("--draws", type=int, default=3, help="(b): perturbations averaged (default 3)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--train-mode", action="store_true", help="measure (a) and (c) with dropout on")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--out-json", help="write every number here")
    p.add_argument("--plot-dir", help="write the PNG plots here")
    return p


def parse_list(text, what, cast=str):
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise DiagnoseError(f"--{what}: expected a comma-separated list, got {text!r}")
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise DiagnoseError(f"--{what}: expected a comma-separated list of integers, got {text!r}")


def check_args(args):
    from fairseq_admin.models.residual_transformer import FAIRSEQ_ARCHS
    from fairseq_admin.schemes import SCHEMES

    args.scheme_list = parse_list(args.schemes, "schemes") if args.schemes is not None else list(SCHEMES)
    unknown = [s for s in args.scheme_list if s not in SCHEMES]
    if unknown:
        raise DiagnoseError(f"unknown scheme(s) {', '.join(unknown)}; choose from {', '.join(SCHEMES)}")
    args.layer_list = parse_list(args.layers, "layers", int)
    if any(n < 1 for n in args.layer_list):
        raise DiagnoseError(f"--layers: depths must be positive integers, got {args.layers!r}")
    if args.arch not in FAIRSEQ_ARCHS:
        hint = next((f" (give the base architecture: --arch {args.arch[len(s) + 1:]})" for s in SCHEMES
                     if args.arch.startswith(s + "_")), "")
        raise DiagnoseError(f"--arch {args.arch!r} is not a base architecture{hint}; choose from "
                            f"{', '.join(FAIRSEQ_ARCHS)}")
    if args.data and not os.path.isdir(args.data):
        raise DiagnoseError(f"--data {args.data!r}: no such directory")
    for name in ("batch_size", "src_len", "tgt_len", "draws"):
        if getattr(args, name) < 1:
            raise DiagnoseError(f"--{name.replace('_', '-')} must be >= 1")
    if args.vocab_size < 10:
        raise DiagnoseError("--vocab-size must be >= 10")
    if args.out_json:
        data_files = [os.path.join(args.data, name) for name in os.listdir(args.data)] if args.data else []
        check_output_path(args.out_json, "--out-json", want_dir=False, inputs=data_files)
    if args.plot_dir:
        if importlib.util.find_spec("matplotlib") is None:  # before the directory is created: nothing left behind
            raise DiagnoseError("--plot-dir needs matplotlib, an optional dependency: "
                                "pip install 'fairseq_admin[plots]'")
        check_output_path(args.plot_dir, "--plot-dir", want_dir=True)


def check_output_path(path, option, want_dir, inputs=()):
    """Before any work: ``path`` can be written as a file that is none of ``inputs`` (``want_dir``: a directory to
    write files into, created if missing); the rules are fairseq_admin.output_safety's."""
    try:
        if want_dir:
            output_safety.check_output_directory(path, option)
        else:
            output_safety.check_output(path, inputs, option)
    except output_safety.OutputPathError as e:
        raise DiagnoseError(str(e)) from None


def fairseq_args(args, scheme, depth, rest):
    from fairseq import options

    parser = options.get_training_parser()

    def refuse(message):  # argparse would print its usage and exit 2: one line instead
        raise DiagnoseError(f"{message} (the arguments fairseq-admin-diagnose does not know go to fairseq's parser)")

    parser.error = refuse
    argv = [args.data or "/nonexistent-data", "--task", "admin_translation", "--arch", f"{scheme}_{args.arch}",
            "--encoder-layers", str(depth), "--decoder-layers", str(depth), "--seed", str(args.seed), *rest]
    return options.parse_args_and_arch(parser, argv)


class SyntheticTask:
    """What build_model needs from a task: one joined dictionary of ``size`` symbols."""

    def __init__(self, size):
        from fairseq.data import Dictionary

        self.source_dictionary = self.target_dictionary = Dictionary()
        for i in range(size - self.source_dictionary.nspecial):
            self.source_dictionary.add_symbol(f"w{i}")


def synthetic_sample(dictionary, bsz, src_len, tgt_len, seed):
    """Random sentences of random lengths (half to full), left-padded sources, as fairseq's collater makes them."""
    from fairseq.data import data_utils

    g = torch.Generator().manual_seed(seed)

    def sentence(max_len):
        n = int(torch.randint(max(1, max_len // 2), max_len + 1, (1,), generator=g))
        return torch.cat([torch.randint(dictionary.nspecial, len(dictionary), (n,), generator=g),
                          torch.tensor([dictionary.eos()])])

    src = [sentence(src_len) for _ in range(bsz)]
    tgt = [sentence(tgt_len) for _ in range(bsz)]
    pad, eos = dictionary.pad(), dictionary.eos()
    target = data_utils.collate_tokens(tgt, pad, eos)
    return {"net_input": {"src_tokens": data_utils.collate_tokens(src, pad, eos, left_pad=True),
                          "src_lengths": torch.tensor([len(s) for s in src]),
                          "prev_output_tokens": data_utils.collate_tokens(tgt, pad, eos, move_eos_to_beginning=True)},
            "target": target, "ntokens": int(target.ne(pad).sum()), "nsentences": bsz}


def data_task_and_sample(args, rest):
    from fairseq import tasks

    fs_args = fairseq_args(args, args.scheme_list[0], args.layer_list[0], rest)
    try:
        task = tasks.setup_task(fs_args)
        task.load_dataset(args.split)
    except (FileNotFoundError, OSError, Exception) as e:  # fairseq raises bare Exceptions for missing files
        raise DiagnoseError(f"--data {args.data!r}: cannot load split {args.split!r}: {e}")
    dataset = task.dataset(args.split)
    fits = [i for i in range(len(dataset)) if max(dataset.num_tokens(i), 1) <= args.max_len]
    if not fits:
        raise DiagnoseError(f"--data {args.data!r}: no {args.split} sentence of at most {args.max_len} tokens")
    g = torch.Generator().manual_seed(args.seed)
    chosen = [fits[int(i)] for i in torch.randperm(len(fits), generator=g)[:args.batch_size]]
    return task, dataset.collater([dataset[i] for i in chosen])


def diagnose_one(args, scheme, depth, rest, task, sample):
    from fairseq_admin import diagnostics as D
    from fairseq_admin.models import ResidualTransformerModel
    from fairseq_admin.profiling import profile_model

    fs_args = fairseq_args(args, scheme, depth, rest)
    torch.manual_seed(args.seed)
    model = ResidualTransformerModel.build_model(fs_args, task)
    if model.needs_profiling():
        torch.manual_seed(args.seed)
        profile_model(model, sample)  # train mode on this batch, as the model's first training forward does
    model.train(args.train_mode)
    torch.manual_seed(args.seed)
    grads = D.gradient_norms(model, sample, args.label_smoothing)
    torch.manual_seed(args.seed)
    beta = D.residual_dependency(model, sample)
    change = D.output_change(model, sample, args.perturbation, args.draws, seed=args.seed)
    return {"scheme": scheme, "layers": depth, "embed_dim": fs_args.encoder_embed_dim,
            "ffn_dim": fs_args.encoder_ffn_embed_dim, "heads": fs_args.encoder_attention_heads,
            "grad_norms": grads, "last_ffn_grad_norm": grads["last_ffn"], "output_change": change,
            "beta": beta, "omega": D.omega_values(model)}


DEFINITIONS = {
    "grad_norms": "Frobenius norm of dL/dW over each sublayer's weight matrices (no biases/LayerNorms), L the "
                  "token-averaged label-smoothed CE of the batch, at initialization (after Admin's profiling); "
                  "layer value = sqrt of the sum of squares over its sublayers",
    "last_ffn_grad_norm": "||dL/dW|| of fc2 of the last decoder layer (Xiong et al. 2020, Theorem 1)",
    "output_change": "mean over real target tokens and dims of (F(x;W+delta)-F(x;W))^2, F the decoder's last hidden "
                     "states, delta = perturbation*rms(W)*N(0,1) on every layer weight matrix, eval mode; mean/std "
                     "over draws (Liu et al. 2020, amplification effect)",
    "beta": "beta_i = Var(f_i)/(Var(s_i)+Var(f_i)), f_i the sublayer branch as the join adds it (alpha*f for ReZero, "
            "LN_out(f) for Peri-LN), s_i = combine(f,x_i)-f_i the shortcut term (x_i*omega_i for Admin), scalar "
            "variances over real tokens (Liu et al. 2020)",
    "omega": "Admin's omega per sublayer (mean over dimensions), after profiling",
}


def layer_norm_values(grads, stack):
    return [math.sqrt(sum(n * n for n in row if n is not None)) for row in grads[stack]]


def flat(rows):
    return [v for row in rows for v in row if v is not None]


def make_plots(results, schemes, depths, plot_dir, caption=""):
    """One PNG per measurement; every scheme keeps its colour (``diagnostics.SCHEME_COLORS``) in every figure, the
    legend sits outside the axes, layer axes have integer ticks, and ``caption`` (the setting) is the bottom line."""
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's logging config would print its DEBUG lines
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from fairseq_admin.diagnostics import scheme_color

    os.makedirs(plot_dir, exist_ok=True)
    by = {(r["scheme"], r["layers"]): r for r in results}
    written = []

    def integer_ticks(ax, n):  # layer and sublayer numbers 1..n: integer ticks only, whatever n is
        if n <= 12:
            ax.set_xticks(range(1, n + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    def save(fig, name, title):
        fig.suptitle(title, fontsize=10)
        if caption:  # wrapped to the figure's width (about 16 characters an inch at this size)
            fig.supxlabel(textwrap.fill(caption, int(16 * fig.get_figwidth())), fontsize=7)
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", fontsize=7)
        path = os.path.join(plot_dir, name)
        with output_safety.atomic_write(path, "wb") as f:  # a failed run keeps the previous plot
            fig.savefig(f, format="png", dpi=80)
        plt.close(fig)
        written.append(path)

    def grid(name, title, ylabel, values, xlabel, log=True):
        fig, axes = plt.subplots(2, len(depths), figsize=(3.2 * len(depths) + 1.2, 5.6), squeeze=False,
                                 sharey="row", layout="constrained")
        for col, depth in enumerate(depths):
            for row, stack in enumerate(("encoder", "decoder")):
                ax = axes[row][col]
                for s in schemes:
                    ys = values(by[s, depth], stack)
                    ax.plot(range(1, len(ys) + 1), ys, marker=".", ms=3, lw=1, color=scheme_color(s), label=s)
                ax.set_title(f"{stack}, {depth} layers", fontsize=9)
                if log:
                    ax.set_yscale("log")
                ax.set_xlabel(xlabel, fontsize=8)
                integer_ticks(ax, len(ys))
                ax.tick_params(labelsize=7)
            axes[0][0].set_ylabel(ylabel, fontsize=8)
            axes[1][0].set_ylabel(ylabel, fontsize=8)
        save(fig, name, title)

    def against_depth(name, title, ylabel, key, log=False):
        fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
        for s in schemes:
            ys = [key(by[s, d]) for d in depths]
            if isinstance(ys[0], tuple):
                ax.errorbar(depths, [m for m, _ in ys], yerr=[e for _, e in ys], marker="o", capsize=3,
                            color=scheme_color(s), label=s)
            else:
                ax.plot(depths, ys, marker="o", color=scheme_color(s), label=s)
        ax.set(xlabel="layers", ylabel=ylabel, yscale="log" if log else "linear")
        ax.set_xticks(depths)
        save(fig, name, title)

    grid("grad_norms.png", "(a) weight-gradient norm per layer at initialization", "||dL/dW||",
         lambda r, st: layer_norm_values(r["grad_norms"], st), "layer")
    grid("beta.png", "(c) residual dependency beta = Var(f)/(Var(shortcut)+Var(f)) per sublayer", "beta",
         lambda r, st: flat(r["beta"][st]), "sublayer")
    against_depth("last_ffn_grad.png", "(a) last FFN (fc2, last decoder layer) gradient norm", "||dL/dW||",
                  lambda r: r["last_ffn_grad_norm"])
    against_depth("output_change.png", "(b) output change under relative perturbation",
                  "mean (F(W+d)-F(W))^2", lambda r: (r["output_change"]["mean"], r["output_change"]["std"]), log=True)

    with_omega = [s for s in schemes if by[s, depths[0]]["omega"] is not None]
    if with_omega:
        styles = ("-", "--", ":", "-.")
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), squeeze=False, layout="constrained")
        for i, stack in enumerate(("encoder", "decoder")):
            ax = axes[0][i]
            for s in with_omega:
                for j, d in enumerate(depths):  # the scheme's colour, one line style per depth
                    ys = flat(by[s, d]["omega"][stack])
                    ax.plot(range(1, len(ys) + 1), ys, ls=styles[j % len(styles)], marker=".", ms=3,
                            color=scheme_color(s), label=f"{s} {d} layers")
            ax.set(title=f"{stack}", xlabel="sublayer", ylabel="omega")
            integer_ticks(ax, max(len(line.get_xdata()) for line in ax.get_lines()))
            ax.title.set_fontsize(9)
        save(fig, "omega.png", "Admin's omega per sublayer")
    return written


def table(results):
    head = (f"{'scheme':<9}{'layers':>6}  {'last-FFN grad':>13}  {'grad L1/Ltop':>12}  {'output change':>13}  "
            f"{'beta dec 1st':>12}  {'beta dec top':>12}  {'omega range':>15}")
    lines = [head, "-" * len(head)]
    for r in results:
        dec = layer_norm_values(r["grad_norms"], "decoder")
        beta = [sum(flat([row])) / len(flat([row])) for row in r["beta"]["decoder"]]
        omega = flat(r["omega"]["encoder"]) + flat(r["omega"]["decoder"]) if r["omega"] else None
        lines.append(f"{r['scheme']:<9}{r['layers']:>6}  {r['last_ffn_grad_norm']:>13.4g}  "
                     f"{dec[0] / dec[-1]:>12.3g}  {r['output_change']['mean']:>13.3g}  {beta[0]:>12.3f}  "
                     f"{beta[-1]:>12.3f}  " + (f"{min(omega):>7.3g}..{max(omega):<6.3g}" if omega else f"{'-':>15}"))
    return "\n".join(lines)


def main(argv=None):
    args, rest = build_parser().parse_known_args(argv)  # --help: before torch and fairseq are imported
    import fairseq_admin

    fairseq_admin.register()  # the plugin's models and options (fairseq_admin/__init__.py: not at import)
    check_args(args)
    for scheme in args.scheme_list:  # fairseq's parser refuses a bad argument now, not after the first scheme's work
        fairseq_args(args, scheme, args.layer_list[0], rest)
    torch.set_num_threads(args.threads)
    if args.data:
        task, sample = data_task_and_sample(args, rest)
        source = f"{args.data} ({args.split})"
    else:
        task = SyntheticTask(args.vocab_size)
        sample = synthetic_sample(task.source_dictionary, args.batch_size, args.src_len, args.tgt_len, args.seed)
        source = f"synthetic ({args.batch_size} sentences, vocab {args.vocab_size})"
    print(f"[diagnose] batch: {source}, {sample['ntokens']} target tokens; schemes {args.scheme_list}; "
          f"layers {args.layer_list}; arch {args.arch} {' '.join(rest)}", flush=True)
    results = []
    for scheme in args.scheme_list:
        for depth in args.layer_list:
            start = time.time()
            try:
                results.append(diagnose_one(args, scheme, depth, rest, task, sample))
            except ValueError as e:  # the schemes' own start-up errors
                raise DiagnoseError(f"{scheme}, {depth} layers: {e}")
            print(f"[diagnose] {scheme} {depth}L done in {time.time() - start:.1f}s", flush=True)
    print(table(results))
    if args.out_json:
        config = {k: v for k, v in vars(args).items() if k not in ("scheme_list", "layer_list")}
        config.update(schemes=args.scheme_list, layers=args.layer_list, fairseq_args=rest, batch=source,
                      ntokens=sample["ntokens"], torch=torch.__version__)
        with output_safety.atomic_write(args.out_json) as f:
            json.dump({"config": config, "definitions": DEFINITIONS, "results": results}, f, indent=1)
        print(f"[diagnose] wrote {args.out_json}")
    if args.plot_dir:
        caption = (f"arch {args.arch} {' '.join(rest)}; batch {source}, {sample['ntokens']} target tokens; "
                   f"{'train' if args.train_mode else 'eval'} mode; seed {args.seed}; {args.draws} perturbation draws")
        for path in make_plots(results, args.scheme_list, args.layer_list, args.plot_dir, caption):
            print(f"[diagnose] wrote {path}")
    return results


def cli_main():
    try:
        main()
    except DiagnoseError as e:
        print(f"fairseq-admin-diagnose: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli_main()
