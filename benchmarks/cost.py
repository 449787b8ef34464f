#!/usr/bin/env python3
"""What the plugin costs against vanilla fairseq: training and generation throughput, peak memory, Admin's profiling.

Every scheme of ``fairseq_admin.schemes.SCHEMES`` (``--arch <scheme>_transformer``, ``--task admin_translation``) is
compared with fairseq's own ``--arch transformer`` (``--task translation``) of identical dimensions; Pre-LN is compared
with the vanilla model built with ``--encoder-normalize-before --decoder-normalize-before`` (fairseq's own Pre-LN),
every Post-LN-family scheme with the vanilla Post-LN model.

Throughput is measured in ONE process, the two models alternating on the same fixed real Multi30k batches:
V S V S ... S V (vanilla and scheme interleaved, starting and ending with vanilla). The first ``--warmup`` rounds
are discarded; each later round i gives the ratio  scheme_time_i / mean(vanilla_time_i, vanilla_time_{i+1})
(the vanilla rounds on both sides of it, so slow drifts of the machine's load cancel), reported as the median with
its min-max spread, as throughput ratio scheme / vanilla = 1 / time ratio.

* training: fairseq's real training step, ``fairseq.trainer.Trainer.train_step`` (task.train_step -> criterion
  (label-smoothed CE) -> backward -> Adam step -> lr scheduler), i.e. what fairseq-train runs per update;
  target tokens per second.
* generation: ``SequenceGenerator`` (beam 4) through ``task.inference_step`` (what fairseq-generate calls) on a fixed
  set of test_2016_flickr source sentences; sentences per second. The models are untrained, so the output length is
  pinned (min_len = max_len = ``--gen-len`` tokens, then EOS): both models do exactly the same decoding work.
* memory: peak resident set size (VmHWM, reset through /proc/self/clear_refs) of ``--mem-steps`` training steps,
  minus the RSS just before the first step, in a fresh subprocess per model (so one model's freed-but-cached heap
  cannot hide another's); it includes gradients, Adam's state (created at the first step) and activations.
  CPU only; on CUDA use torch.cuda.max_memory_allocated instead.
* Admin's profiling (``fairseq_admin.profiling.profile_model``) alternated with a training step on the same batch:
  profiling time / training-step time.

    python benchmarks/cost.py --smoke          # 1-1 layers, 1 scheme, a few seconds per measure: checks the code
    python benchmarks/cost.py                  # the full measurement (6-6 and 18-18, every scheme)
"""
import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from datetime import datetime, timezone

from common import (ROOT, DEFAULT_RAW, DEFAULT_WORK, alternate, baseline_of, build, code_version, cpu_name,
                    fixed_batches, gen_batches, make_generator, make_log, prepare_data, summarize, time_call,
                    time_generate, time_train)

log = make_log("cost")


def load():
    return round(os.getloadavg()[0], 2)


# ---- memory (fresh subprocess per model) --------------------------------------------------------------------------
def _rss_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def memory_worker(a):
    """Runs in its own process: build one model, take --mem-steps training steps, report RSS numbers (KiB)."""
    import torch
    torch.set_num_threads(a.threads)
    batches = fixed_batches(a.data_bin, a.batches, a.max_tokens)
    m = build(a.memory_worker, a.layer, a.data_bin, a.max_tokens, shlex.split(a.scheme_args))
    gc.collect()
    before = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    for i in range(a.mem_steps):
        m["trainer"].train_step([batches[i % len(batches)]])
    peak = _rss_kib("VmHWM")
    print(json.dumps({"rss_before_kib": before, "peak_rss_kib": peak, "peak_delta_kib": peak - before,
                      "params": m["params"]}))


def measure_memory(a, name, layers):
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-worker", name, "--layer", layers,
           "--data-bin", a.data_bin, "--max-tokens", str(a.max_tokens), "--batches", str(a.batches),
           "--mem-steps", str(a.mem_steps), "--threads", str(a.threads), f"--scheme-args={a.scheme_args}"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"memory worker {name} {layers} failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- main ----------------------------------------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=DEFAULT_WORK,
                   help="where Multi30k is prepared if --data-bin is not given (default benchmarks/work)")
    p.add_argument("--data-bin", default=None, help="a fairseq data-bin of Multi30k En-De (default WORK/data/data-bin)")
    p.add_argument("--raw-dir", default=DEFAULT_RAW)
    p.add_argument("--schemes", default=None,
                   help="comma list (default: every scheme in SCHEMES); 'vanilla' measures a second vanilla model "
                        "against the first: the A/A control, whose ratio shows the method's own bias and noise")
    p.add_argument("--scheme-args", default="",
                   help="extra fairseq options for the scheme models only, e.g. --scheme-args=\"--admin-omega scalar\" "
                        "(recorded in the result; not applied to 'vanilla')")
    p.add_argument("--layers", default="6-6,18-18")
    p.add_argument("--rounds", type=int, default=7, help="alternation rounds per pair, warm-up included")
    p.add_argument("--warmup", type=int, default=2, help="rounds dropped at the start")
    p.add_argument("--batches", type=int, default=2, help="fixed training batches per round")
    p.add_argument("--max-tokens", type=int, default=3500)
    p.add_argument("--gen-sentences", type=int, default=64)
    p.add_argument("--gen-batch", type=int, default=32)
    p.add_argument("--gen-len", type=int, default=20, help="pinned output length (tokens before EOS)")
    p.add_argument("--mem-steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier under shared load)")
    p.add_argument("--skip", default="", help="comma list of parts to skip: train,generate,memory,profile")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/cost-<UTC time>.json)")
    p.add_argument("--smoke", action="store_true", help="1-1 layers, first scheme only, 2 rounds: checks the code")
    p.add_argument("--render", default=None, metavar="JSON", help="print the markdown tables of a result file")
    p.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--layer", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.render:
        print(markdown(json.load(open(a.render))))
        return 0
    if a.data_bin is None:
        a.data_bin = os.path.join(prepare_data(os.path.abspath(a.work), a.raw_dir, log), "data-bin")
    if a.memory_worker:
        return memory_worker(a)

    import torch
    import fairseq
    torch.set_num_threads(a.threads)
    from fairseq_admin.profiling import profile_model
    from fairseq_admin.schemes import SCHEMES
    schemes = a.schemes.split(",") if a.schemes else list(SCHEMES)
    unknown = [x for x in schemes if x not in SCHEMES and x != "vanilla"]
    if unknown:
        p.error(f"unknown scheme(s) {', '.join(unknown)}; choose from vanilla (the A/A control), {', '.join(SCHEMES)}")
    scheme_args = shlex.split(a.scheme_args)
    if a.smoke:
        schemes, a.layers, a.rounds, a.warmup, a.batches = schemes[:1] + (["admin"] if "admin" in SCHEMES and
                                                                           schemes[0] != "admin" else []), "1-1", 2, 1, 1
        a.gen_sentences, a.mem_steps = 8, 1
    skip = set(filter(None, a.skip.split(",")))
    # smoke results go to benchmarks/results/tmp/ (git-ignored)
    out_path = a.out or os.path.join(ROOT, "benchmarks", "results", *(["tmp"] if a.smoke else []),
                                     f"cost-{'smoke-' if a.smoke else ''}{datetime.now(timezone.utc):%Y%m%dT%H%MZ}.json")
    batches = fixed_batches(a.data_bin, a.batches, a.max_tokens)
    tgt_tokens = sum(int(b["ntokens"]) for b in batches)
    gbatches = gen_batches(a.data_bin, a.gen_sentences, a.gen_batch)
    n_sent = sum(len(b["id"]) for b in gbatches)
    report = {
        "started_utc": datetime.now(timezone.utc).isoformat(), "uptime_start": _uptime(),
        "machine": {"nproc": os.cpu_count(), "torch_threads": a.threads, "torch": torch.__version__,
                    "fairseq": fairseq.__version__, "python": platform.python_version(), "cpu": cpu_name()},
        "setup": {"dims": "d=128, ffn 512, 4 heads, shared embeddings, dropout 0.1, Adam, label-smoothed CE",
                  "train_batches": len(batches), "train_target_tokens_per_round": tgt_tokens,
                  "train_sentences_per_round": sum(int(b["nsentences"]) for b in batches),
                  "scheme_args": a.scheme_args,
                  "gen_sentences_per_round": n_sent, "gen_beam": 4, "gen_len_pinned": a.gen_len,
                  "rounds": a.rounds, "warmup_rounds": a.warmup, "smoke": a.smoke,
                  "memory": "peak RSS (VmHWM after clear_refs) minus RSS before the first of --mem-steps training "
                            "steps, one fresh process per model", "mem_steps": a.mem_steps},
        "results": [], "memory": [], "admin_profiling": [],
        "command": " ".join([sys.executable] + sys.argv), "code": code_version(),
    }
    log(f"{len(batches)} training batches ({tgt_tokens} target tokens), {n_sent} generation sentences; "
        f"schemes {schemes}; layers {a.layers}; load {load()}")

    def save():
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        json.dump(report, open(out_path + ".tmp", "w"), indent=1)
        os.replace(out_path + ".tmp", out_path)

    for layers in a.layers.split(","):
        vanillas = {}
        for scheme in schemes:
            base = baseline_of(scheme)
            if base not in vanillas:
                vanillas[base] = build(base, layers, a.data_bin, a.max_tokens)
            v = vanillas[base]
            s = build(scheme, layers, a.data_bin, a.max_tokens, scheme_args)
            row = {"layers": layers, "scheme": scheme, "baseline": base, "scheme_params": s["params"],
                   "baseline_params": v["params"], "scheme_model": s["class"], "baseline_model": v["class"]}
            if "train" not in skip:
                l0 = load()
                res = alternate(lambda: time_train(v, batches), lambda: time_train(s, batches), a.rounds, a.warmup)
                row["train"] = summarize(res, tgt_tokens, "tokens_per_s")
                row["train"]["load1_start_end"] = [l0, load()]
                log(f"{layers} {scheme} train: {_fmt(row['train'])}")
            if "generate" not in skip:
                gv, gs = make_generator(v, a.gen_len), make_generator(s, a.gen_len)
                l0 = load()
                res = alternate(lambda: time_generate(v, gv, gbatches), lambda: time_generate(s, gs, gbatches),
                                a.rounds, a.warmup)
                row["generate"] = summarize(res, n_sent, "sentences_per_s")
                row["generate"]["load1_start_end"] = [l0, load()]
                log(f"{layers} {scheme} generate: {_fmt(row['generate'])}")
            if scheme == "admin" and "profile" not in skip:
                row_p = measure_profiling(s, batches[0], a.rounds, a.warmup, profile_model)
                row_p["layers"] = layers
                report["admin_profiling"].append(row_p)
                log(f"{layers} admin profiling / training step: {row_p['ratio_median']} "
                    f"[{row_p['ratio_min']}, {row_p['ratio_max']}]")
            report["results"].append(row)
            del s
            gc.collect()
            save()
        del vanillas
        gc.collect()
        if "memory" not in skip:
            names = sorted({baseline_of(x) for x in schemes}) + [x for x in schemes if x != "vanilla"]
            mem = {n: measure_memory(a, n, layers) for n in names}
            for n in schemes:
                if n == "vanilla":  # the A/A control measures throughput only: its memory row would be vanilla's own
                    continue
                base = baseline_of(n)
                report["memory"].append({
                    "layers": layers, "scheme": n, "baseline": base,
                    "scheme_peak_delta_mib": round(mem[n]["peak_delta_kib"] / 1024, 1),
                    "baseline_peak_delta_mib": round(mem[base]["peak_delta_kib"] / 1024, 1),
                    "ratio": round(mem[n]["peak_delta_kib"] / mem[base]["peak_delta_kib"], 4),
                    "scheme_peak_rss_mib": round(mem[n]["peak_rss_kib"] / 1024, 1),
                    "baseline_peak_rss_mib": round(mem[base]["peak_rss_kib"] / 1024, 1)})
                log(f"{layers} {n} memory: {report['memory'][-1]}")
            save()
    report["finished_utc"] = datetime.now(timezone.utc).isoformat()
    report["uptime_end"] = _uptime()
    save()
    md = markdown(report)
    open(out_path[:-5] + ".md", "w").write(md)
    print(md)
    log(f"wrote {out_path} and {out_path[:-5]}.md")
    return 0


def measure_profiling(m, batch, rounds, warmup, profile_model):
    """Admin's profile_model alternated with a training step on the same batch (T P T P ... P T)."""
    res = alternate(lambda: time_train(m, [batch]), lambda: time_call(lambda: profile_model(m["model"], batch)),
                    rounds, warmup)
    r = sorted(res["cpu_time_ratios"] if res.get("cpu_time_ratios") else res["time_ratios"])
    return {"ratio_median": round(statistics.median(r), 4), "ratio_min": round(r[0], 4), "ratio_max": round(r[-1], 4),
            "train_step_s": res["vanilla_s"], "profile_s": res["scheme_s"], "batch_target_tokens": int(batch["ntokens"]),
            "load1": load()}



def _fmt(r):
    out = f"wall ratio {r['throughput_ratio_median']} [{r['throughput_ratio_min']}, {r['throughput_ratio_max']}]"
    if "cpu_throughput_ratio_median" in r:
        out += (f", CPU-time ratio {r['cpu_throughput_ratio_median']} [{r['cpu_throughput_ratio_min']}, "
                f"{r['cpu_throughput_ratio_max']}]")
    return out + f", load {r['load1_start_end']}"



def _uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return f"loadavg {os.getloadavg()}"


def _cell(r, prefix=""):
    if not r or f"{prefix}throughput_ratio_median" not in r:
        return "—"
    return (f"{r[prefix + 'throughput_ratio_median']:.3f} [{r[prefix + 'throughput_ratio_min']:.3f}, "
            f"{r[prefix + 'throughput_ratio_max']:.3f}]")


def markdown(report):
    rows = ["| layers | scheme | baseline | train tok/s ratio: CPU time | train: wall clock | vanilla / scheme tok/s "
            "(wall) | generation sent/s ratio: CPU time | generation: wall clock | vanilla / scheme sent/s (wall) | "
            "load (1-min) train; gen |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        t, g = r.get("train"), r.get("generate")
        rows.append(
            f"| {r['layers']} | {r['scheme']} | {r['baseline']} | {_cell(t, 'cpu_')} | {_cell(t)} | "
            + (f"{t['vanilla_tokens_per_s_median']} / {t['scheme_tokens_per_s_median']}" if t else "—")
            + f" | {_cell(g, 'cpu_')} | {_cell(g)} | "
            + (f"{g['vanilla_sentences_per_s_median']} / {g['scheme_sentences_per_s_median']}" if g else "—")
            + f" | {t['load1_start_end'] if t else '—'}; {g['load1_start_end'] if g else '—'} |")
    md = "\n".join(rows) + "\n"
    if report["memory"]:
        md += ("\n| layers | scheme | baseline | peak RSS increase over 3 training steps, MiB (scheme / vanilla) | ratio |"
               " peak RSS MiB (scheme / vanilla) |\n|---|---|---|---|---|---|\n")
        for m in report["memory"]:
            md += (f"| {m['layers']} | {m['scheme']} | {m['baseline']} | {m['scheme_peak_delta_mib']} / "
                   f"{m['baseline_peak_delta_mib']} | {m['ratio']:.3f} | {m['scheme_peak_rss_mib']} / "
                   f"{m['baseline_peak_rss_mib']} |\n")
    if report["admin_profiling"]:
        md += "\n| layers | Admin profiling time / one training step, median [min, max] | batch target tokens |\n"
        md += "|---|---|---|\n"
        for p in report["admin_profiling"]:
            md += f"| {p['layers']} | {p['ratio_median']:.3f} [{p['ratio_min']:.3f}, {p['ratio_max']:.3f}] | " \
                  f"{p['batch_target_tokens']} |\n"
    md += f"\nLoad: `{report['uptime_start']}` at start, `{report.get('uptime_end', '')}` at end; " \
          f"torch threads {report['machine']['torch_threads']} on {report['machine']['nproc']} cores.\n"
    if report["setup"].get("scheme_args"):
        md += f"Scheme models built with `{report['setup']['scheme_args']}` (vanilla models without).\n"
    return md


if __name__ == "__main__":
    sys.exit(main())
