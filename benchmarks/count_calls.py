"""Where a scheme's extra time goes, counted rather than timed: operators and Python calls of one beam search.

Timings on a shared 2-core machine move by percents; counts do not. For one batch of test_2016_flickr sentences
(beam 4, output length pinned as in ``benchmarks/cost.py``) this counts, for vanilla fairseq and for each scheme of
identical dimensions:

* the PyTorch operators dispatched (``TorchDispatchMode``): extra tensor work;
* the Python function calls (``cProfile`` call counts, not its times): extra interpreter work, per function.

and prints each scheme's differences from vanilla. A scheme that does vanilla's arithmetic (postln, preln) should
differ only by the few Python calls of the ``residual_connection`` routing.

    python benchmarks/count_calls.py --layers 18-18 --schemes postln,admin \\
        --out benchmarks/results/count-calls-18-18.json
"""
import argparse
import collections
import cProfile
import json
import os
import pstats
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def count(m, generator, batch):
    """(operator counts, Python call counts per function) of one inference_step, after one untimed warm-up."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Operators(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.counts = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.counts[str(func)] += 1
            return func(*args, **(kwargs or {}))

    m["model"].eval()
    with torch.no_grad():
        m["task"].inference_step(generator, [m["model"]], batch)
        with Operators() as ops:
            m["task"].inference_step(generator, [m["model"]], batch)
        profile = cProfile.Profile()
        profile.enable()
        m["task"].inference_step(generator, [m["model"]], batch)
        profile.disable()
    calls = collections.Counter()
    for (path, _, func), (_, ncalls, *_) in pstats.Stats(profile).stats.items():
        calls[f"{os.path.basename(path)}:{func}"] += ncalls
    return ops.counts, calls


def difference(scheme, vanilla):
    keys = set(scheme) | set(vanilla)
    diff = {k: scheme[k] - vanilla[k] for k in keys if scheme[k] != vanilla[k]}
    return dict(sorted(diff.items(), key=lambda kv: (-abs(kv[1]), kv[0])))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", default="18-18")
    p.add_argument("--schemes", default="postln,preln,admin,b2t,deepnorm")
    p.add_argument("--sentences", type=int, default=32, help="test sentences in the one batch (default 32)")
    p.add_argument("--gen-len", type=int, default=20, help="pinned output length, as in cost.py")
    p.add_argument("--data-bin", default=os.path.join(HERE, "work", "data", "data-bin"),
                   help="a Multi30k data-bin, as prepared by benchmarks/cost.sh or run_grid.sh")
    p.add_argument("--out", default=None, help="also write the counts as JSON here")
    a = p.parse_args(argv)
    if not os.path.isdir(a.data_bin):
        p.error(f"no data-bin at {a.data_bin}: run `bash benchmarks/cost.sh --smoke` once to prepare Multi30k")

    import torch
    import common  # the model building shared with cost.py
    from fairseq_admin.schemes import SCHEMES
    torch.set_num_threads(1)
    schemes = a.schemes.split(",")
    unknown = [s for s in schemes if s not in SCHEMES]
    if unknown:
        p.error(f"unknown scheme(s) {', '.join(unknown)}; choose from {', '.join(SCHEMES)}")
    batch = common.gen_batches(a.data_bin, a.sentences, a.sentences)[0]
    counted = {}
    for name in sorted({common.baseline_of(s) for s in schemes}) + schemes:
        m = common.build(name, a.layers, a.data_bin, 3500)
        counted[name] = count(m, common.make_generator(m, a.gen_len), batch)
    report = {"layers": a.layers, "sentences": len(batch["id"]), "beam": 4, "gen_len_pinned": a.gen_len,
              "command": " ".join([sys.executable] + sys.argv), "models": {}}
    for name, (ops, calls) in counted.items():
        row = {"operators": sum(ops.values()), "python_calls": sum(calls.values())}
        if name in schemes:
            base_ops, base_calls = counted[common.baseline_of(name)]
            row.update(baseline=common.baseline_of(name), operators_minus_baseline=difference(ops, base_ops),
                       python_calls_minus_baseline=difference(calls, base_calls))
        report["models"][name] = row
        print(f"{a.layers} {name}: {row['operators']} operators, {row['python_calls']} Python calls", flush=True)
        for key in ("operators_minus_baseline", "python_calls_minus_baseline"):
            if key in row:
                print(f"    {key}: {json.dumps(dict(list(row[key].items())[:15]))}")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        json.dump(report, open(a.out, "w"), indent=1)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
