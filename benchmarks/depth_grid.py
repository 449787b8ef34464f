#!/usr/bin/env python3
"""Stability and quality at depth: every residual scheme on Multi30k En-De, small CPU dimensions, two regimes.

One cell = (regime, scheme, layers, seed) = one real ``fairseq-train`` run (``--task admin_translation --arch
<scheme>_transformer``, validation every ``--validate-interval`` updates, ``--log-stability`` every log line)
followed by beam-4 decoding of test_2016_flickr from ``checkpoint_best.pt`` and sacreBLEU. Each cell writes
``RESULTS/<regime>_<scheme>_<layers>_seed<k>.json``: training and validation curves, divergence/stall flags, final
valid loss, BLEU, the largest activation and gradient norms seen, time per update, wall time and machine load.

Re-running skips finished cells and resumes interrupted ones (fairseq continues from ``checkpoint_last.pt``,
saved every ``--validate-interval`` updates). Only one training runs at a time: a lock file in the work directory
stops a second grid process (2 CPU cores: two trainings would halve each other's speed and the timings).

    python benchmarks/depth_grid.py --dry-run           # the plan and the commands, nothing runs (seconds)
    python benchmarks/depth_grid.py --layers 18-18      # run (resumable)
    python benchmarks/depth_grid.py --render            # table + PNG curves from the result files only
"""
import argparse
import fcntl
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

from common import DEFAULT_RAW, DEFAULT_WORK, ROOT, code_version, cpu_name, hypothesis_stats, make_log, sacrebleu_of_pieces
from common import prepare_data as _prepare_data

DEFAULT_RESULTS = os.path.join(ROOT, "benchmarks", "results", "grid")
# Most informative first: the paper's claims are about deep Post-LN vs its fixes.
PRIORITY = ("postln", "admin", "preln", "b2t", "deepnorm")
# Named variants of a scheme, run as their own grid rows: the name stands in the cell's scheme place
# (standard_admin-ologn_18-18_seed1). Each is (scheme, extra fairseq-train options, plot colour).
VARIANTS = {
    # Admin's closed form instead of profiling: every sublayer of a stack starts at omega = sqrt((n+1)/ln(n+1) - 1),
    # n its residual sublayers (fairseq_admin/schemes/admin.py, CLOSED_FORMS; admin-torch's default)
    "admin-ologn": ("admin", ["--admin-init", "O(logn)"], "tab:olive"),
    # Peri-LN without its input and embedding norms: x + LN(f(x)) (OLMo 2, Swin v2; fairseq_admin/schemes/peri_ln.py)
    "peri_ln-output": ("peri_ln", ["--peri-ln-output-only"], "tab:pink"),
    # the normalization as a choice (fairseq_admin/modules/norms.py): every norm of the model RMSNorm or DyT
    "postln-rmsnorm": ("postln", ["--norm", "rmsnorm"], "tab:brown"),
    "postln-dyt": ("postln", ["--norm", "dyt"], "tab:gray"),
    "preln-rmsnorm": ("preln", ["--norm", "rmsnorm"], "tab:cyan"),
    "preln-dyt": ("preln", ["--norm", "dyt"], "tab:purple"),
}

# Identical for every scheme and regime (benchmarks/HISTORY.md, "Before the plugin").
MODEL_ARGS = [
    "--encoder-embed-dim", "128", "--decoder-embed-dim", "128",
    "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4", "--share-all-embeddings",
    "--dropout", "0.1", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)",
]
REGIMES = {
    # the setting under which 18-18 Post-LN stalled at 9.88 after 400 updates.
    "standard": {"args": ["--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "200",
                          "--warmup-init-lr", "1e-7"],
                 "desc": "lr 1e-3, inverse_sqrt, 200 linear warm-up updates from 1e-7"},
    # Xiong et al. §3.2: Post-LN without warm-up (or with a large lr) breaks; Pre-LN is claimed not to need warm-up.
    "aggressive": {"args": ["--lr", "2e-3", "--lr-scheduler", "fixed"],
                   "desc": "lr 2e-3 constant from the first update, no warm-up (fixed scheduler)"},
}


log = make_log("depth_grid")


def available_schemes():
    sys.path.insert(0, ROOT)
    from fairseq_admin.schemes import SCHEMES
    names = list(SCHEMES)
    return [s for s in PRIORITY if s in names] + [s for s in names if s not in PRIORITY]


def cell_name(regime, scheme, layers, seed):
    return f"{regime}_{scheme}_{layers}_seed{seed}"


def variant(row_scheme):
    """(registered scheme, extra fairseq-train options, plot colour) of a grid row: a :data:`VARIANTS` entry, or the
    scheme itself with no options and its usual colour."""
    if row_scheme in VARIANTS:
        return VARIANTS[row_scheme]
    from fairseq_admin.diagnostics import scheme_color
    return row_scheme, [], scheme_color(row_scheme)


def variants_help():
    """The :data:`VARIANTS` as help text (the end of this script's --help and of run_grid.sh --help)."""
    return "\n".join(["Variants (--cells REGIME_VARIANT_LAYERS_seedK, e.g. standard_admin-ologn_18-18_seed1):"] +
                     [f"  {name:<18}= {scheme} with {' '.join(options)}" for name, (scheme, options, _) in VARIANTS.items()])


# ---- data --------------------------------------------------------------------------------------------------------
def prepare_data(work, raw_dir):
    return _prepare_data(work, raw_dir, log)


def unigram_baseline(data):
    """Cross-entropy (bits/token) of valid targets under the training targets' unigram distribution (add-1),
    the level a model that ignores its input stalls at. Cached in data/unigram.json."""
    cache = os.path.join(data, "unigram.json")
    if os.path.exists(cache):
        return json.load(open(cache))
    from collections import Counter
    from fairseq.data import Dictionary, data_utils
    d = Dictionary.load(os.path.join(data, "data-bin", "dict.de.txt"))
    counts = {}
    for split in ("train", "valid"):
        ds = data_utils.load_indexed_dataset(os.path.join(data, "data-bin", f"{split}.en-de.de"), d)
        c = Counter()
        for i in range(len(ds)):
            c.update(ds[i].tolist())
        counts[split] = c
    total = sum(counts["train"].values()) + len(d)
    ce = -sum(n * math.log2((counts["train"].get(t, 0) + 1) / total) for t, n in counts["valid"].items())
    out = {"valid_unigram_bits": ce / sum(counts["valid"].values()),
           "vocab": len(d), "note": "cross-entropy of valid targets (incl. EOS) under train unigram, add-1"}
    json.dump(out, open(cache, "w"), indent=1)
    return out


# ---- one cell ----------------------------------------------------------------------------------------------------
def train_command(args, data, save_dir, regime, scheme, layers, seed):
    enc, dec = layers.split("-")
    base, extra, _ = variant(scheme)
    cmd = [sys.executable, "-m", "fairseq_cli.train", os.path.join(data, "data-bin"),
           "--user-dir", os.path.join(ROOT, "fairseq_admin"), "--task", "admin_translation",
           "--arch", f"{base}_transformer", "--encoder-layers", enc, "--decoder-layers", dec, *extra,
           *MODEL_ARGS, *REGIMES[regime]["args"],
           "--max-tokens", str(args.max_tokens), "--max-update", str(args.max_update), "--seed", str(seed),
           "--cpu", "--num-workers", "0", "--save-dir", save_dir,
           "--validate-interval-updates", str(args.validate_interval), "--save-interval-updates",
           str(args.validate_interval), "--keep-interval-updates", "1", "--no-epoch-checkpoints",
           "--log-format", "json", "--log-interval", str(args.log_interval),
           # the fp16-risk proxies (largest residual-stream activation, per-layer gradient norms) at every log line;
           # reading them changes no number of the training (fairseq_admin/diagnostics.py, install_stability_log)
           "--log-stability", str(args.log_interval)]
    if scheme == "admin":  # the profiled omega, kept in the result (the closed form has nothing to save)
        cmd += ["--admin-profile-save", os.path.join(save_dir, "profile.ratio.init")]
    return cmd


LINE = re.compile(r"\| (train_inner|train|valid) \| (\{.*\})\s*$")
STAB_LAYER_GNORM = re.compile(r"^stab_g_(enc|dec)\d+$")  # a layer's gradient norm (diagnostics.log_stability)


def _f(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def parse_log(path):
    """Training (train_inner) and validation curves from a fairseq --log-format json log; later lines for the same
    update (a resumed segment) replace earlier ones."""
    train, valid, fpe = {}, {}, None
    if not os.path.exists(path):
        return [], [], None
    for line in open(path, errors="replace"):
        if "FloatingPointError" in line or "gradients are Nan/Inf" in line or "Minimum loss scale reached" in line:
            fpe = line.strip()[-200:]
        m = LINE.search(line)
        if not m:
            continue
        kind, blob = m.groups()
        try:
            rec = json.loads(blob)
        except json.JSONDecodeError:
            continue
        if kind == "train_inner":
            u = int(_f(rec.get("num_updates")))
            train[u] = {"update": u, "loss": _f(rec.get("loss")), "nll_loss": _f(rec.get("nll_loss")),
                        "gnorm": _f(rec.get("gnorm")), "lr": _f(rec.get("lr")), "wps": _f(rec.get("wps")),
                        "ups": _f(rec.get("ups"))}
            layer_gnorms = [_f(v) for k, v in rec.items() if STAB_LAYER_GNORM.match(k)]
            if "stab_act_max" in rec or layer_gnorms:  # --log-stability figures of this line
                train[u]["act_max"] = _f(rec.get("stab_act_max"))
                train[u]["layer_gnorm_max"] = max(layer_gnorms, default=float("nan"))
        elif kind == "valid":
            u = int(_f(rec.get("valid_num_updates")))
            valid[u] = {"update": u, "loss": _f(rec.get("valid_loss")), "nll_loss": _f(rec.get("valid_nll_loss"))}
    return [train[k] for k in sorted(train)], [valid[k] for k in sorted(valid)], fpe


def judge(train, valid, fpe, unigram_bits, jump_bits=2.0):
    """divergence: a non-finite loss/gradient (fairseq stops with FloatingPointError), or a validation loss more
    than ``jump_bits`` above its best so far (explosion). stall: final valid nll within 0.5 bit of the unigram
    level (the model ignores its input: the deep Post-LN failure)."""
    diverged_at, reason = None, None
    for p in train:
        if not math.isfinite(p["loss"]) or math.isinf(p["gnorm"]):
            diverged_at, reason = p["update"], "non-finite training loss"
            break
    if diverged_at is None:
        best = float("inf")
        for p in valid:
            if not math.isfinite(p["loss"]):
                diverged_at, reason = p["update"], "non-finite validation loss"
                break
            if p["loss"] > best + jump_bits:
                diverged_at, reason = p["update"], f"validation loss rose {p['loss'] - best:.2f} bits above its best"
                break
            best = min(best, p["loss"])
    if diverged_at is None and fpe:
        diverged_at = (train[-1]["update"] if train else 0)
        reason = "fairseq stopped: " + fpe
    final = valid[-1] if valid else None
    stalled = bool(final and unigram_bits and math.isfinite(final["nll_loss"])
                   and final["nll_loss"] > unigram_bits - 0.5)
    return {"diverged": diverged_at is not None, "diverged_at_update": diverged_at, "divergence_reason": reason,
            "stalled_near_unigram": stalled}


class LoadSampler(threading.Thread):
    """Samples the 1-minute load average every ``period`` seconds while a training runs."""

    def __init__(self, period=30):
        super().__init__(daemon=True)
        self.period, self.samples, self._stop_evt = period, [os.getloadavg()[0]], threading.Event()

    def run(self):
        while not self._stop_evt.wait(self.period):
            self.samples.append(os.getloadavg()[0])

    def stop(self):
        self._stop_evt.set()
        self.samples.append(os.getloadavg()[0])
        return self.samples


def checkpoint_updates(path):
    from fairseq_admin.checkpoint_safety import load_checkpoint  # weights-only, fairseq's allow-list
    state = load_checkpoint(path)
    return int(state["optimizer_history"][-1]["num_updates"])


def generate_bleu(args, data, ckpt, out_dir):
    """Beam 4 / lenpen 0.6 on test_2016_flickr (every sentence: --required-batch-size-multiple 1), sentencepiece
    decoding, sacreBLEU (13a) against the raw references. Output length is capped at 1.2*src+10 tokens so that a
    stalled model cannot spend minutes on 200-token hypotheses (Multi30k references are short)."""
    cmd = [sys.executable, "-m", "fairseq_cli.generate", os.path.join(data, "data-bin"),
           "--user-dir", os.path.join(ROOT, "fairseq_admin"), "--task", "admin_translation",
           "--path", ckpt, "--gen-subset", "test", "--beam", "4", "--lenpen", "0.6",
           "--max-len-a", "1.2", "--max-len-b", "10", "--max-tokens", "6000",
           "--required-batch-size-multiple", "1", "--cpu", "--num-workers", "0"]
    threads = _want_threads(args)  # as for training: 2 OpenMP threads on busy cores run several times slower
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    gen_s = time.time() - t0
    with open(os.path.join(out_dir, "generate.out"), "w") as f:
        f.write(res.stdout)
        f.write(res.stderr[-20000:])
    if res.returncode != 0:
        raise RuntimeError(f"fairseq-generate failed ({res.returncode}): {res.stderr[-2000:]}")
    hyps = {}
    for line in res.stdout.splitlines():
        if line.startswith("H-"):
            head, _score, text = (line.split("\t") + ["", ""])[:3]
            hyps[int(head[2:])] = text
    detok, score = sacrebleu_of_pieces(data, hyps)
    with open(os.path.join(out_dir, "test.hyp.de"), "w", encoding="utf-8") as f:
        f.write("\n".join(detok) + "\n")
    return {"bleu": score["bleu"], "bleu_str": score["bleu_str"], "signature": score["signature"],
            "generate_seconds": round(gen_s, 1), "sentences": score["sentences"], **hypothesis_stats(detok),
            "generate_threads": threads, "generate_command": " ".join(cmd)}


def recount_hypotheses(results_dir, work_dirs):
    """Adds hypothesis_stats to result files written before it existed, from WORK/runs/<cell>/test.hyp.de (kept
    after a cell finishes). A file whose line count differs from the result's sentence count is refused."""
    changed = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*_seed*.json"))):
        result = json.load(open(path))
        evaluation = result.get("evaluation")
        if not evaluation or "distinct_hypotheses" in evaluation:
            continue
        for work in work_dirs:
            hyp_path = os.path.join(work, "runs", result["cell"], "test.hyp.de")
            if os.path.exists(hyp_path):
                break
        else:
            log(f"{result['cell']}: no test.hyp.de under {', '.join(work_dirs)}; left without hypothesis counts")
            continue
        hyps = open(hyp_path, encoding="utf-8").read().rstrip("\n").split("\n")
        if len(hyps) != evaluation["sentences"]:
            raise SystemExit(f"{hyp_path}: {len(hyps)} lines, but {path} scored {evaluation['sentences']} sentences")
        evaluation.update(hypothesis_stats(hyps))
        evaluation["hypothesis_stats_source"] = f"recounted from {os.path.relpath(hyp_path, ROOT)}"
        tmp = path + ".tmp"
        json.dump(result, open(tmp, "w"), indent=1, allow_nan=True)
        os.replace(tmp, path)
        changed.append(result["cell"])
        log(f"{result['cell']}: {evaluation['distinct_hypotheses']} distinct hypotheses "
            f"(most common x{evaluation['most_common_hypothesis_count']})")
    return changed


def run_cell(args, data, unigram, regime, scheme, layers, seed):
    name = cell_name(regime, scheme, layers, seed)
    result_path = os.path.join(args.results, name + ".json")
    run_dir = os.path.join(args.work, "runs", name)
    save_dir = os.path.join(run_dir, "checkpoints")
    state_path = os.path.join(run_dir, "state.json")
    train_log = os.path.join(run_dir, "train.log")
    if os.path.exists(result_path):
        done = json.load(open(result_path))
        if done.get("max_update") == args.max_update or not args.rerun_other_budget:
            log(f"{name}: finished ({done.get('max_update')} updates) -> skip")
            return "skipped"
    cmd = train_command(args, data, save_dir, regime, scheme, layers, seed)
    state = json.load(open(state_path)) if os.path.exists(state_path) else {"segments": []}
    resumed = os.path.exists(os.path.join(save_dir, "checkpoint_last.pt"))
    if args.dry_run:
        log(f"{name}: would {'RESUME' if resumed else 'start'}: " + " ".join(map(_q, cmd)))
        return "planned"
    os.makedirs(save_dir, exist_ok=True)
    ckpt = os.path.join(save_dir, "checkpoint_last.pt")
    if resumed and checkpoint_updates(ckpt) >= args.max_update:
        # trained to the budget, stopped before evaluation: fairseq would add one more update if started again
        log(f"{name}: checkpoint_last.pt already at the budget; evaluating only")
        rc = 0
    else:
        rc = _train(args, name, cmd, train_log, state, state_path, resumed)
    return _finish(args, data, unigram, regime, scheme, layers, seed, name, cmd, rc, result_path, run_dir, save_dir,
                   state, train_log)


def _want_threads(args, own=0):
    """2 torch threads when the cores are free, else 1: two OpenMP threads on busy cores spin at their barriers and
    ran ~8x slower here (70 against 540 target tokens/s under a load of 7). ``own``: threads of our own training,
    part of the load average."""
    if args.threads:
        return args.threads
    return 2 if os.getloadavg()[0] - own < (os.cpu_count() or 2) - 1.5 else 1


def _train(args, name, cmd, train_log, state, state_path, resumed):
    """Runs fairseq-train in segments: with --threads 0, after each saved checkpoint the thread count is re-chosen
    from the load, and fairseq is restarted from checkpoint_last.pt when it should change (at most 4 times)."""
    restarts = 0
    threads = _want_threads(args)
    ckpt = os.path.join(os.path.dirname(train_log), "checkpoints", "checkpoint_last.pt")
    while True:
        log(f"{name}: {'resuming' if resumed else 'starting'} training ({args.max_update} updates), {threads} torch "
            f"thread(s), load {os.getloadavg()[0]:.2f}; log {train_log}")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        sampler = LoadSampler()
        sampler.start()
        t0 = time.time()
        switched = False
        # The segment is recorded as it runs (rewritten every minute), so that a runner killed from outside (a
        # session's end) still leaves its wall time in the state; "interrupted" stays true until fairseq returns.
        seg = {"start": datetime.fromtimestamp(t0, timezone.utc).isoformat(), "seconds": 0.0, "rc": None,
               "resumed": resumed, "threads": threads, "switched": False, "interrupted": True,
               "cpu": cpu_name()}  # a resumed cell may run on another machine, whose kernels round differently
        state["segments"].append(seg)

        def record(loads):
            seg.update(seconds=time.time() - t0, load1_mean=sum(loads) / len(loads), load1_max=max(loads))
            with open(state_path + ".tmp", "w") as f:  # replaced whole: a kill mid-write leaves the old state
                json.dump(state, f, indent=1)
            os.replace(state_path + ".tmp", state_path)

        record(list(sampler.samples))
        last_record = time.time()
        with open(train_log, "a") as logf:
            logf.write(f"\n#### depth_grid segment {datetime.now(timezone.utc).isoformat()} resumed={resumed} "
                       f"threads={threads}\n" + " ".join(map(_q, cmd)) + "\n")
            logf.flush()
            saved = _count(train_log, "Saved checkpoint")
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
            while proc.poll() is None:
                time.sleep(10)
                if time.time() - last_record >= 60:
                    record(list(sampler.samples))
                    last_record = time.time()
                n = _count(train_log, "Saved checkpoint")
                if n > saved:
                    saved = n
                    want = _want_threads(args, own=threads)
                    last = _last_saved_update(train_log)
                    if (not args.threads and restarts < 4 and want != threads
                            and last is not None and last < args.max_update):  # never at the final checkpoint
                        log(f"{name}: load {os.getloadavg()[0]:.2f}: restarting from the checkpoint just saved "
                            "with another thread count")
                        proc.terminate()
                        proc.wait()
                        switched = True
                        restarts += 1
                        next_threads = want
            rc = proc.returncode
        seg.update(rc=rc, switched=switched, interrupted=False)
        record(sampler.stop())
        if not switched:
            return rc
        resumed = True
        threads = next_threads
        if os.path.exists(ckpt) and checkpoint_updates(ckpt) >= args.max_update:
            return 0  # the budget was reached: restarting would make fairseq train one more update


SAVED = re.compile(r"Saved checkpoint .*@ (\d+) updates")


def _last_saved_update(path):
    last = None
    try:
        for line in open(path, errors="replace"):
            m = SAVED.search(line)
            if m:
                last = int(m.group(1))
    except OSError:
        pass
    return last


def _count(path, needle):
    try:
        return sum(needle in line for line in open(path, errors="replace"))
    except OSError:
        return 0


def _finish(args, data, unigram, regime, scheme, layers, seed, name, cmd, rc, result_path, run_dir, save_dir, state,
            train_log):
    train, valid, fpe = parse_log(train_log)
    verdict = judge(train, valid, fpe, unigram.get("valid_unigram_bits"))
    if rc != 0 and not fpe:
        raise RuntimeError(f"{name}: fairseq-train exited {rc} without a floating-point error; see {train_log} "
                           "(re-run to resume)")
    ckpt = os.path.join(save_dir, "checkpoint_last.pt")
    ckpt_updates = checkpoint_updates(ckpt) if os.path.exists(ckpt) else None
    if rc == 0 and (ckpt_updates or 0) < args.max_update:
        raise RuntimeError(f"{name}: checkpoint_last.pt is at update {ckpt_updates}, not {args.max_update}")
    evaluation, evaluated = None, None
    best = os.path.join(save_dir, "checkpoint_best.pt")  # lowest validation loss: the test set only reports
    if ckpt_updates and os.path.exists(best):
        best_updates = checkpoint_updates(best)
        evaluated = f"checkpoint_best.pt (update {best_updates})"
        log(f"{name}: decoding test_2016_flickr from {evaluated}")
        evaluation = generate_bleu(args, data, best, run_dir)
    segs = state["segments"]
    total_s = sum(s["seconds"] for s in segs)
    result = {
        "cell": name, "regime": regime, "regime_desc": REGIMES[regime]["desc"], "scheme": scheme, "layers": layers,
        "seed": seed, "max_update": args.max_update, "max_tokens": args.max_tokens,
        "validate_interval": args.validate_interval,
        "completed_updates": ckpt_updates, "fairseq_rc": rc,
        **verdict,
        "final_valid_loss": valid[-1]["loss"] if valid else None,
        "final_valid_nll_loss": valid[-1]["nll_loss"] if valid else None,
        "best_valid_loss": min((p["loss"] for p in valid if math.isfinite(p["loss"])), default=None),
        "unigram_valid_bits": unigram.get("valid_unigram_bits"),
        "bleu": evaluation["bleu"] if evaluation else None, "evaluation": evaluation,
        "evaluated_checkpoint": evaluated,
        "train_wall_seconds": round(total_s, 1),
        # wall time of the whole run (validation and checkpoints included) per update, and fairseq's own
        # training-only rate (median of the logged ups)
        "seconds_per_update": round(total_s / ckpt_updates, 3) if ckpt_updates else None,
        "train_seconds_per_update_logged": _inverse_median([p["ups"] for p in train]),
        "stability": stability_maxima(train),
        "train_segments": segs,
        "load1_mean": round(sum(s["load1_mean"] * s["seconds"] for s in segs) / max(total_s, 1e-9), 2),
        "load1_max": round(max(s["load1_max"] for s in segs), 2),
        "mean_wps_logged": _mean([p["wps"] for p in train]),
        "valid_curve": valid, "train_curve": train,
        "profile_ratio_init": _read(os.path.join(save_dir, "profile.ratio.init")),
        "command": " ".join(map(_q, cmd)),
        "finished_utc": datetime.now(timezone.utc).isoformat(),
        "code": code_version(),
        "host": {"nproc": os.cpu_count(), "torch_threads": sorted({x.get("threads") for x in segs}, key=str),
                 "cpus": sorted({x.get("cpu") for x in segs}, key=str)},
    }
    os.makedirs(args.results, exist_ok=True)
    tmp = result_path + ".tmp"
    json.dump(result, open(tmp, "w"), indent=1, allow_nan=True)
    os.replace(tmp, result_path)
    log(f"{name}: final valid loss {result['final_valid_loss']}, BLEU {result['bleu']}, diverged {result['diverged']}"
        f", stalled {result['stalled_near_unigram']}, {total_s / 60:.1f} min, load {result['load1_mean']}")
    if not args.keep_checkpoints:
        shutil.rmtree(save_dir, ignore_errors=True)
    return "done"


def stability_maxima(train):
    """The largest values seen over the run's log lines: fairseq's gradient norm before clipping (every line), and
    from ``--log-stability`` the largest |activation| of any residual sum on real tokens and the largest per-layer
    gradient norm (None for a run logged without it)."""
    def top(key):
        xs = [p[key] for p in train if key in p and math.isfinite(p[key])]
        return round(max(xs), 4) if xs else None
    return {"max_gnorm": top("gnorm"), "max_activation": top("act_max"), "max_layer_gnorm": top("layer_gnorm_max"),
            "lines_with_stability": sum("act_max" in p for p in train)}


def _inverse_median(rates):
    xs = sorted(1 / x for x in rates if math.isfinite(x) and x > 0)
    return round(xs[len(xs) // 2], 3) if xs else None


def _mean(xs):
    xs = [x for x in xs if math.isfinite(x)]
    return round(sum(xs) / len(xs), 1) if xs else None


def _read(path):
    return open(path).read() if os.path.exists(path) else None


def _q(s):
    return s if re.fullmatch(r"[\w./=:,+-]+", s) else "'" + s.replace("'", "'\\''") + "'"


# ---- rendering (from result files only) --------------------------------------------------------------------------
def render(results_dir, out_md=None):
    files = sorted(glob.glob(os.path.join(results_dir, "*_seed*.json")))
    rows = [json.load(open(f)) for f in files]
    order = {s: i for i, s in enumerate(PRIORITY + tuple(VARIANTS))}
    rows.sort(key=lambda r: (-int(r["layers"].split("-")[0]), list(REGIMES).index(r["regime"]) if r["regime"] in
                             REGIMES else 9, order.get(r["scheme"], 99), r["seed"]))
    lines = ["| regime | layers | scheme | seed | updates | final valid loss (nll) | best valid loss | diverged | "
             "stalled near unigram | BLEU (sacreBLEU, test_2016_flickr) | distinct outputs (most repeated) | "
             "largest activation / layer grad norm / grad norm | s per update | train min | load (1-min mean/max) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        div = f"yes @{r['diverged_at_update']}" if r["diverged"] else "no"
        # cells from before these figures were recorded: the maxima their train curve has (fairseq's grad norm)
        stab = r.get("stability") or stability_maxima(r.get("train_curve") or [])
        per_update = r.get("seconds_per_update") or (
            round(r["train_wall_seconds"] / r["completed_updates"], 3) if r.get("completed_updates") else None)
        lines.append(
            f"| {r['regime']} | {r['layers']} | {r['scheme']} | {r['seed']} | {r['completed_updates']} | "
            f"{_fmt(r['final_valid_loss'])} ({_fmt(r['final_valid_nll_loss'])}) | {_fmt(r['best_valid_loss'])} | "
            f"{div} | {'yes' if r['stalled_near_unigram'] else 'no'} | {_fmt(r['bleu'])}{_checkpoint_mark(r)} | "
            f"{_distinct(r)} | {_fmt(stab.get('max_activation'))} / {_fmt(stab.get('max_layer_gnorm'))} / "
            f"{_fmt(stab.get('max_gnorm'))} | {_fmt(per_update)} | "
            f"{r['train_wall_seconds'] / 60:.1f} | {r['load1_mean']}/{r['load1_max']} |")
    md = "\n".join(lines) + "\n" + _seed_summary(rows)
    if rows and rows[0].get("unigram_valid_bits"):
        md += (f"\nLosses in bits/token (fairseq's label-smoothed loss; nll in parentheses). Unigram level of the "
               f"valid targets: {rows[0]['unigram_valid_bits']:.2f} bits. Distinct outputs: different hypotheses "
               f"among the test sentences, and in parentheses how often the most frequent one was emitted (a model "
               f"that ignores its input gives a few sentences for every input). BLEU is of checkpoint_best.pt (lowest "
               f"validation loss); \u2020: of checkpoint_last.pt, a later update than the best (cells run before the grid "
               f"evaluated the best). The "
               f"largest activation (|residual sum| on real tokens) and layer gradient norm come from --log-stability "
               f"every 10 updates (\u2014: a cell run without it); grad norm: fairseq's, before clipping; s per "
               f"update: the run's wall time (validation included) over its updates.\n")
    pngs = plot(rows, results_dir)
    if out_md:
        open(out_md, "w").write(md)
    return md, pngs


def _seed_summary(rows):
    """Mean [min, max] over seeds of every (regime, layers, scheme) run with more than one seed."""
    groups = {}
    for r in rows:
        groups.setdefault((r["regime"], r["layers"], r["scheme"]), []).append(r)
    lines = []
    for (regime, layers, scheme), rs in groups.items():
        if len(rs) < 2:
            continue
        cells = []
        for key in ("final_valid_loss", "bleu"):
            xs = [r[key] for r in rs if r[key] is not None and math.isfinite(r[key])]
            cells.append(f"{sum(xs) / len(xs):.2f} [{min(xs):.2f}, {max(xs):.2f}]" if xs else "—")
        diverged = sum(bool(r["diverged"]) for r in rs)
        lines.append(f"| {regime} | {layers} | {scheme} | {', '.join(str(r['seed']) for r in rs)} | {cells[0]} | "
                     f"{cells[1]} | {diverged} of {len(rs)} |")
    if not lines:
        return ""
    return ("\nAcross seeds (mean [min, max]):\n\n| regime | layers | scheme | seeds | final valid loss | BLEU | "
            "diverged |\n|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n")


def _checkpoint_mark(r):
    """\u2020 for a BLEU of checkpoint_last.pt that is not checkpoint_best.pt's: fairseq replaces checkpoint_best.pt
    at every validation at least as good as the best so far (fairseq/checkpoint_utils.py, ``is_better``), so a last
    validation equal to the best one means the two checkpoints are the same update."""
    last = (r.get("evaluated_checkpoint") or "").startswith("checkpoint_last")
    return " \u2020" if last and r.get("final_valid_loss") != r.get("best_valid_loss") else ""


def _distinct(r):
    e = r.get("evaluation") or {}
    if "distinct_hypotheses" not in e:
        return "—"
    most = e.get("most_common_hypothesis_count")
    return f"{e['distinct_hypotheses']}/{e['sentences']}" + (f" ({most})" if most is not None else "")


def _fmt(x):
    return "—" if x is None else (f"{x:.2f}" if isinstance(x, float) else str(x))


def plot(rows, results_dir):
    """One PNG per (regime, layers): valid loss, train loss and each run's sacreBLEU; the scheme decides the colour
    (fairseq_admin.diagnostics.SCHEME_COLORS, the same in every figure), the seed the line style; the legend sits
    outside the axes and the bottom line states the setting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = ("-", "--", ":", "-.")
    groups = {}
    for r in rows:
        groups.setdefault((r["regime"], r["layers"]), []).append(r)
    out = []
    for (regime, layers), rs in groups.items():
        rs = sorted(rs, key=lambda r: (r["scheme"], r["seed"]))
        fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained",
                                            gridspec_kw={"width_ratios": [3, 3, 2]})
        for r in rs:
            label = f"{r['scheme']} s{r['seed']}" + (" (diverged)" if r["diverged"] else "")
            style = dict(color=variant(r["scheme"])[2], ls=styles[(r["seed"] - 1) % len(styles)])
            v = [p for p in r["valid_curve"] if math.isfinite(p["loss"])]
            ax1.plot([p["update"] for p in v], [p["loss"] for p in v], marker="o", ms=3, label=label, **style)
            t = [p for p in r["train_curve"] if math.isfinite(p["loss"])]
            ax2.plot([p["update"] for p in t], [p["loss"] for p in t], **style)
        if rs[0].get("unigram_valid_bits"):
            ax1.axhline(rs[0]["unigram_valid_bits"], color="grey", ls="--", lw=0.8, label="unigram (nll)")
        scored = [r for r in rs if r.get("bleu") is not None]
        ax3.barh(range(len(scored)), [r["bleu"] for r in scored], color=[variant(r["scheme"])[2] for r in scored])
        ax3.set_yticks(range(len(scored)), [f"{r['scheme']} s{r['seed']}" for r in scored], fontsize=8)
        ax3.invert_yaxis()
        for i, r in enumerate(scored):
            ax3.text(r["bleu"], i, f" {r['bleu']:.2f}", va="center", fontsize=7)
        ax1.set(title="valid loss", xlabel="update", ylabel="bits/token")
        ax2.set(title="train loss", xlabel="update", ylabel="bits/token")
        ax3.set(title="sacreBLEU, test_2016_flickr, beam 4", xlabel="BLEU")
        fig.legend(*ax1.get_legend_handles_labels(), loc="outside right center", fontsize=8)
        fig.suptitle(f"Multi30k En-De, {regime} regime, {layers} layers (encoder-decoder)", fontsize=10)
        fig.supxlabel(f"{regime}: {rs[0].get('regime_desc', '')}; d=128, ffn 512, 4 heads; "
                      f"{rs[0].get('max_update')} updates of {rs[0].get('max_tokens')} tokens", fontsize=8)
        path = os.path.join(results_dir, f"{regime}_{layers}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        out.append(path)
    return out


# ---- main ----------------------------------------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, epilog=variants_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=DEFAULT_WORK, help="data, checkpoints and logs (default benchmarks/work)")
    p.add_argument("--results", default=DEFAULT_RESULTS, help="result JSONs (default benchmarks/results/grid)")
    p.add_argument("--raw-dir", default=DEFAULT_RAW, help="raw Multi30k (default ../shared/data/multi30k)")
    p.add_argument("--schemes", default=None, help="comma list (default: every scheme of fairseq_admin.schemes."
                                                   "SCHEMES, in the order " + ",".join(PRIORITY) + ")")
    p.add_argument("--layers", default="18-18,6-6", help="comma list of N-M (default 18-18,6-6)")
    p.add_argument("--regimes", default="standard,aggressive", help="comma list of " + ",".join(REGIMES))
    p.add_argument("--seeds", default="1", help="comma list (default 1)")
    p.add_argument("--cells", default=None,
                   help="explicit comma list of cells in the order to run, e.g. aggressive_preln_18-18_seed1,"
                        "standard_b2t_18-18_seed1 (overrides --schemes/--layers/--regimes/--seeds); the scheme "
                        "place also takes a variant (listed below)")
    p.add_argument("--max-update", type=int, default=300)
    p.add_argument("--max-tokens", type=int, default=3500)
    p.add_argument("--validate-interval", type=int, default=50, help="updates between validations and checkpoints")
    p.add_argument("--log-interval", type=int, default=10)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per training; 0 (default): 2 when the 1-min load is below nproc-0.5 at the "
                        "start of a segment, else 1 (2 OpenMP threads on busy cores spin and run ~5x slower)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoints of finished cells")
    p.add_argument("--rerun-other-budget", action="store_true",
                   help="re-run finished cells whose max_update differs from --max-update")
    p.add_argument("--stop-after", default=None,
                   help="UTC time HH:MM after which no new cell is started (a running one finishes)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the commands; run nothing")
    p.add_argument("--render", action="store_true", help="only render RESULTS/TABLE.md and PNGs from result files")
    p.add_argument("--recount-hypotheses", nargs="+", metavar="WORK", default=None,
                   help="add distinct-output counts to result files that lack them, from WORK/runs/<cell>/test.hyp.de "
                        "(one or more work directories); then exit")
    args = p.parse_args(argv)
    args.work, args.results = os.path.abspath(args.work), os.path.abspath(args.results)

    if args.recount_hypotheses:
        recount_hypotheses(args.results, [os.path.abspath(w) for w in args.recount_hypotheses])
        return 0

    if args.render:
        md, pngs = render(args.results, os.path.join(args.results, "TABLE.md"))
        print(md)
        print("\n".join("wrote " + x for x in pngs + [os.path.join(args.results, "TABLE.md")]))
        return 0

    known = available_schemes()
    schemes = args.schemes.split(",") if args.schemes else known
    for s in schemes:
        if s not in known:
            p.error(f"unknown scheme {s!r}; fairseq_admin.schemes.SCHEMES has {', '.join(known)}")
    regimes = args.regimes.split(",")
    for r in regimes:
        if r not in REGIMES:
            p.error(f"unknown regime {r!r}; choose from {', '.join(REGIMES)}")
    layers = args.layers.split(",")
    for l in layers:
        if not re.fullmatch(r"\d+-\d+", l):
            p.error(f"--layers entries look like 18-18, got {l!r}")
    seeds = [int(s) for s in args.seeds.split(",")]
    # order: depth, then scheme, then regime, then seed -> the deep cells of each scheme in both regimes first
    cells = [(r, s, l, k) for l in layers for s in schemes for r in regimes for k in seeds]
    if args.cells:
        cells = []
        for c in args.cells.split(","):
            m = re.fullmatch(r"([a-z]+)_([a-z0-9_-]+)_(\d+-\d+)_seed(\d+)", c)  # schemes may hold "_" (resi_dual)
            if not m or m.group(1) not in REGIMES or m.group(2) not in known + list(VARIANTS):
                p.error(f"--cells: bad cell {c!r} (REGIME_SCHEME_N-M_seedK; SCHEME one of "
                        f"{', '.join(known + list(VARIANTS))})")
            cells.append((m.group(1), m.group(2), m.group(3), int(m.group(4))))
    os.makedirs(args.work, exist_ok=True)

    if args.dry_run:
        data = os.path.join(args.work, "data")
        log(f"dry run: {len(cells)} cells, data {data}"
            f"{'' if os.path.exists(os.path.join(data, 'data-bin')) else ' (would be prepared)'}")
        for c in cells:
            run_cell(args, data, {}, *c)
        return 0

    lock = open(os.path.join(args.work, "grid.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(f"another depth_grid process holds {lock.name}: only one training at a time on this machine")
    data = prepare_data(args.work, args.raw_dir)
    unigram = unigram_baseline(data)
    log(f"{len(cells)} cells; unigram level {unigram['valid_unigram_bits']:.2f} bits")
    counts = {}
    for c in cells:
        if args.stop_after:
            now = datetime.now(timezone.utc).strftime("%H:%M")
            if now >= args.stop_after and not os.path.exists(os.path.join(args.results, cell_name(*c) + ".json")):
                log(f"it is {now}Z, past --stop-after {args.stop_after}: not starting {cell_name(*c)}")
                counts["not started"] = counts.get("not started", 0) + 1
                continue
        status = run_cell(args, data, unigram, *c)
        counts[status] = counts.get(status, 0) + 1
    log(f"grid done: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
