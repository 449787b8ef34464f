"""Does a trained model still read its source? Per-layer token variation of the encoder, from real checkpoints.

For each checkpoint, on the first ``--sentences`` sentences of a binarized subset (eval mode, no dropout):

* ``variation[l]`` = mean over sentences and features of the standard deviation *across the positions of one
  sentence* of encoder layer l's output (padding excluded). Post-LN-style layers end in a LayerNorm, so every output
  has unit scale: a variation near 0 means every token of every sentence maps to (nearly) the same vector, i.e.
  the encoder has lost its input (rank collapse).
* ``source effect`` = mean |log p(y_t | y_<t, x) - log p(y_t | y_<t, x')| over the batch's target tokens and the
  vocabulary, where x' is another sentence's source (the batch rotated by one; the decoder inputs are unchanged).
  0 means the decoder translates every source into the same distribution: a language model, not a translator.

    python benchmarks/encoder_variation.py --data DATA_BIN CHECKPOINT [CHECKPOINT ...]

Prints one row per checkpoint (``--every K`` prints every K-th layer and the last one). Used for the quick-start
diagnosis in BENCHMARKS.md.
"""
import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def encoder_variation(model, net_input):
    """Per-layer within-sentence standard deviation of the encoder's outputs (list, one value per layer)."""
    src = net_input["src_tokens"]
    pad = src.eq(model.encoder.padding_idx)                      # B x T
    x = model.encoder.forward_embedding(src)[0].transpose(0, 1)   # T x B x C
    keep = (~pad).T.unsqueeze(-1).to(x.dtype)                     # T x B x 1
    n = keep.sum(0)                                               # B x 1
    out = []
    for layer in model.encoder.layers:
        x = layer(x, encoder_padding_mask=pad)
        mean = (x * keep).sum(0) / n
        var = (((x - mean) ** 2) * keep).sum(0) / (n - 1).clamp(min=1)
        out.append(var.sqrt().mean().item())
    return out


def source_effect(model, net_input):
    """Mean |Δ log p| of the decoder's predictions when each sentence gets another sentence's source."""
    src, lengths, prev = net_input["src_tokens"], net_input["src_lengths"], net_input["prev_output_tokens"]
    rolled = torch.roll(torch.arange(src.size(0)), 1)
    own = model.decoder(prev, encoder_out=model.encoder(src, src_lengths=lengths))[0].log_softmax(-1)
    other = model.decoder(prev, encoder_out=model.encoder(src[rolled], src_lengths=lengths[rolled]))[0].log_softmax(-1)
    mask = prev.ne(model.decoder.padding_idx).unsqueeze(-1)
    return ((own - other).abs() * mask).sum().item() / (mask.sum().item() * own.size(-1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", required=True, help="fairseq data-bin the checkpoints were trained on")
    p.add_argument("--subset", default="valid")
    p.add_argument("--sentences", type=int, default=16)
    p.add_argument("--every", type=int, default=3, help="print every K-th layer (and the last)")
    args = p.parse_args(argv)
    for path in args.checkpoints:
        if not os.path.isfile(path):
            p.error(f"checkpoint not found: {path}")
    if not os.path.isdir(args.data):
        p.error(f"--data: not a directory: {args.data}")
    sys.path.insert(0, ROOT)
    from fairseq import checkpoint_utils, utils
    from fairseq_admin import checkpoint_safety

    checkpoint_safety.install()
    utils.import_user_module(argparse.Namespace(user_dir=os.path.join(ROOT, "fairseq_admin")))
    torch.manual_seed(0)
    for path in args.checkpoints:
        models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides={"data": args.data})
        model = models[0].eval()
        task.load_dataset(args.subset)
        dataset = task.dataset(args.subset)
        if len(dataset) < args.sentences:
            p.error(f"{args.subset} has {len(dataset)} sentences, fewer than --sentences {args.sentences}")
        net_input = dataset.collater([dataset[i] for i in range(args.sentences)])["net_input"]
        with torch.no_grad():
            variation = encoder_variation(model, net_input)
            effect = source_effect(model, net_input)
        shown = sorted(set(range(0, len(variation), args.every)) | {len(variation) - 1})
        cells = " ".join(f"L{i + 1}={variation[i]:.2g}" for i in shown)
        print(f"{path}\n  encoder variation: {cells}\n  source effect (mean |Δ log p|): {effect:.3g}")


if __name__ == "__main__":
    main()
