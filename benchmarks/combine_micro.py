#!/usr/bin/env python3
"""Micro-benchmark of one residual ``combine`` (the op(s) a scheme adds per sublayer), current form against a fused
form, at the shapes of this project's CPU runs:

* generation: one incremental decoding step, (1, 128 hypotheses = 32 sentences x beam 4, d=128), no grad;
* training: (25 tokens, 130 sentences, d=128), forward + backward.

Variants: vanilla ``shortcut + branch``; admin ``shortcut * omega[i] + branch`` (current) vs
``torch.addcmul(branch, shortcut, omega[i])``; deepnorm ``shortcut * alpha + branch`` (current) vs
``torch.add(branch, shortcut, alpha=alpha)``. The variants are interleaved, repeated, median reported (µs per call).

    python benchmarks/combine_micro.py
"""
import json
import os
import statistics
import sys
import time

import torch


def bench(fn, n):
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    alpha = 2.1
    out = {}
    for phase, shape, grad, n in (("generation", (1, 128, 128), False, 2000), ("training", (25, 130, 128), True, 200)):
        x = torch.randn(*shape, requires_grad=grad)
        f = torch.randn(*shape, requires_grad=grad)
        omega = torch.nn.Parameter(torch.full((3, 128), 1.7))
        g = torch.randn(*shape)

        def run(expr):
            if not grad:
                def fwd():
                    with torch.no_grad():
                        return expr()
                return fwd
            return lambda: expr().backward(g)

        variants = {
            "vanilla x + f": run(lambda: x + f),
            "admin x * omega[i] + f (current)": run(lambda: x * omega[1] + f),
            "admin addcmul(f, x, omega[i]) (fused)": run(lambda: torch.addcmul(f, x, omega[1])),
            "deepnorm x * alpha + f (current)": run(lambda: x * alpha + f),
            "deepnorm add(f, x, alpha=alpha) (fused)": run(lambda: torch.add(f, x, alpha=alpha)),
        }
        times = {k: [] for k in variants}
        for k, fn in variants.items():  # warm-up
            bench(fn, n // 10)
        for _ in range(7):
            for k, fn in variants.items():
                times[k].append(bench(fn, n))
        med = {k: statistics.median(v) for k, v in times.items()}
        out[phase] = {"shape": shape, "backward": grad, "us_per_call_median": {k: round(v, 2) for k, v in med.items()},
                      "us_per_call_min_max": {k: [round(min(v), 2), round(max(v), 2)] for k, v in times.items()}}
        print(f"{phase} {shape} {'fwd+bwd' if grad else 'no grad'}:")
        for k, v in med.items():
            print(f"  {k:42s} {v:8.2f} us  (x{v / med['vanilla x + f']:.2f} of vanilla)")
    out["load"] = os.getloadavg()
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                               "combine-micro.json")
    json.dump(out, open(path, "w"), indent=1)
    print("wrote", path, "load", out["load"])


if __name__ == "__main__":
    main()
