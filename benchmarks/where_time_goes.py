#!/usr/bin/env python3
"""Where a scheme's extra time goes: cProfile of fairseq's real training step and of beam search, per scheme.

For each model (vanilla fairseq ``transformer`` and the schemes) it profiles ``--steps`` training steps
(``Trainer.train_step``) and one generation pass (``task.inference_step``, beam 4, pinned length) and reports the
time spent inside the plugin's own Python (``fairseq_admin/``: the layers' ``forward`` overrides, ``begin``,
``connect``, ``combine``...) as a share of the total, next to the total itself. Shares are fractions of the same
process's time, so they stay meaningful on a loaded machine; absolute times do not.

    python benchmarks/where_time_goes.py --layers 18-18 --schemes admin,b2t
"""
import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402  (same model building and fixed batches as cost.py)


def plugin_time(stats):
    """(own time in fairseq_admin functions, list of the top ones) from a pstats.Stats."""
    own, rows = 0.0, []
    for (filename, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():
        if "fairseq_admin" in filename:
            own += tt
            rows.append((tt, ct, nc, f"{os.path.relpath(filename, common.ROOT)}:{line} {func}"))
    rows.sort(reverse=True)
    return own, rows[:8]


def profile(fn):
    pr = cProfile.Profile()
    t = time.perf_counter()
    pr.enable()
    fn()
    pr.disable()
    wall = time.perf_counter() - t
    st = pstats.Stats(pr, stream=io.StringIO())
    own, rows = plugin_time(st)
    return {"wall_s": round(wall, 3), "plugin_own_s": round(own, 4), "plugin_share": round(own / wall, 5),
            "top_plugin_functions": [{"tottime_s": round(a, 4), "cumtime_s": round(b, 4), "calls": c, "where": d}
                                     for a, b, c, d in rows]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-bin", default=os.path.join(common.ROOT, "benchmarks", "work", "data", "data-bin"))
    p.add_argument("--layers", default="18-18")
    p.add_argument("--schemes", default=None)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--gen-len", type=int, default=20)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from fairseq_admin.schemes import SCHEMES
    schemes = a.schemes.split(",") if a.schemes else list(SCHEMES)
    batches = common.fixed_batches(a.data_bin, a.steps, 3500)
    gb = common.gen_batches(a.data_bin, 32, 32)
    out = {"layers": a.layers, "threads": a.threads, "load_start": os.getloadavg(), "models": {}}
    for name in ["vanilla"] + schemes:
        m = common.build(name, a.layers, a.data_bin, 3500)
        common.time_train(m, batches[:1])  # warm-up (Admin profiles here)
        tr = profile(lambda: common.time_train(m, batches))
        g = common.make_generator(m, a.gen_len)
        common.time_generate(m, g, gb)
        ge = profile(lambda: common.time_generate(m, g, gb))
        out["models"][name] = {"train": tr, "generate": ge}
        print(f"{name:10s} train {tr['wall_s']:.2f}s, plugin Python {tr['plugin_share'] * 100:.2f}%; "
              f"generate {ge['wall_s']:.2f}s, plugin Python {ge['plugin_share'] * 100:.2f}%", flush=True)
        for r in tr["top_plugin_functions"][:4]:
            print(f"    train  {r['tottime_s']:.4f}s {r['calls']:6d} calls  {r['where']}")
        for r in ge["top_plugin_functions"][:4]:
            print(f"    gen    {r['tottime_s']:.4f}s {r['calls']:6d} calls  {r['where']}")
    out["load_end"] = os.getloadavg()
    path = a.out or os.path.join(common.ROOT, "benchmarks", "results", f"where-time-goes-{a.layers}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    json.dump(out, open(path, "w"), indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
