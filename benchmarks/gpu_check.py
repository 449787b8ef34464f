#!/usr/bin/env python3
"""What the CPU cannot measure, in one short slot on one CUDA device: every step writes the JSON again.

Within ``--budget-min`` wall-clock minutes (counted from the start of this process), in this order:

1. ``train_throughput``: fairseq's real training step (``Trainer.train_step``: label-smoothed CE, backward, Adam) of
   every scheme of ``fairseq_admin.schemes.SCHEMES`` against fairseq's own ``--arch transformer`` of the same
   dimensions (Pre-LN against ``--encoder/decoder-normalize-before``; see ``common.baseline_of``), in ONE process,
   alternating V S V S ... S V on the same fixed Multi30k batch as ``benchmarks/cost.py`` does (first
   ``warmup`` rounds dropped; per round the ratio scheme / mean of the vanilla rounds on both sides; median
   [min, max]); target tokens/s. ``transformer_wmt_en_de`` dimensions (d=512, FFN 2048, 8 heads, shared
   embeddings) at 6-6 and 18-18, batches of ~8k and ~32k tokens (fairseq's ``--max-tokens``), under ``--fp16``,
   ``--bf16`` and float32. Peak GPU memory of each model: its resident memory (parameters, gradients, fp32 master
   copies, Adam's state: ``torch.cuda.memory_allocated`` after building it and taking its first step, minus before)
   plus the peak of ``torch.cuda.max_memory_allocated`` above the allocation at the start of its own step.
2. ``generate_throughput``: beam-4 ``SequenceGenerator`` through ``task.inference_step`` for the same model
   objects, output length pinned (untrained models: both do the same decoding work); sentences/s.
3. ``admin_profiling``: Admin under ``--fp16`` / ``--bf16`` at 18-18: the task profiles ω on the first training
   batch; afterwards ω must be float32 and finite while the weights are fp16/bf16; ``profile_model`` alternated
   with a training step on the same batch gives its cost in training steps.
4. ``low_precision_stability``: every scheme trains 50 updates at 18-18 under ``--fp16`` (and ``--bf16``) on
   successive batches: every loss finite, and under fp16 a stable loss scale (no overflow in the second half of the
   updates; all overflows, the loss-scale trace and its minimum are recorded).
5. ``multi30k_race``: with the time left, all five schemes at 18-18, d=512, under ``--fp16`` (float32 on the CPU),
   ~8k-token batches, the same number of updates each (set from the first scheme's measured time per update),
   depth_grid.py's standard regime (lr 1e-3, inverse_sqrt, warm-up min(200, updates / 4)); validation loss and
   sacreBLEU on test_2016_flickr (beam 4, lenpen 0.6, sentencepiece decoding; ``common.sacrebleu_of_pieces``, as
   ``depth_grid.py`` scores).

Budget: each pass gets a share of the time left (throughput 0.5, profiling 0.07, stability 0.15, race 0.28, renormalised
over the passes still to run); a unit (one scheme pair, one model) starts only if a unit of its kind measured before
fits in its pass's time, otherwise it is listed under ``skipped`` with the reason. A unit that fails is listed
under ``failed`` (the run continues; exit status 1); CUDA out of memory is listed as skipped with the device size.

``--smoke``: the same code on the CPU with tiny dimensions (d=16, 1-1 and 2-2 layers, batches of ~256 and ~1k
tokens, a few rounds and updates) in about a minute; float32 and bf16 are measured, fp16 is listed as skipped
(fairseq's --fp16 trainer needs CUDA); peak GPU memory is not measured on the CPU.

    python benchmarks/gpu_check.py          # on a CUDA machine: benchmarks/results/gpu/gpu-check-<UTC>.json and .md
    python benchmarks/gpu_check.py --smoke --out /tmp/x
    python benchmarks/gpu_check.py --render FILE.json
"""
import argparse
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone

from common import (DEFAULT_RAW, DEFAULT_WORK, OPTIMIZATION, ROOT, alternate, baseline_of, build, code_version,
                    cpu_name, fixed_batches, gen_batches, hypothesis_stats, make_generator, make_log, prepare_data,
                    sacrebleu_of_pieces, summarize, synchronize, time_call, time_generate, time_train,
                    to_model_device)

log = make_log("gpu_check")

PRECISION_FLAGS = {"fp16": ["--fp16"], "bf16": ["--bf16"], "fp32": []}
WMT_EN_DE_DIMS = ["--encoder-embed-dim", "512", "--decoder-embed-dim", "512", "--encoder-ffn-embed-dim", "2048",
                  "--decoder-ffn-embed-dim", "2048", "--encoder-attention-heads", "8", "--decoder-attention-heads",
                  "8", "--share-all-embeddings"]
TINY_DIMS = ["--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
             "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
             "--share-all-embeddings"]
# The race: depth_grid.py's "standard" regime (lr 1e-3, inverse_sqrt from 1e-7), warm-up min(200, updates // 4).
RACE_LR = ["--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-init-lr", "1e-7"]
SHARES = {"throughput": 0.5, "admin_profiling": 0.07, "low_precision_stability": 0.15, "multi30k_race": 0.28}
STEPS = {
    "train_throughput": "training throughput (target tokens/s) and peak GPU memory, scheme vs fairseq's transformer",
    "generate_throughput": "beam-4 generation throughput (sentences/s), scheme vs fairseq's transformer",
    "admin_profiling": "Admin's profiling under fp16/bf16: omega float32 afterwards, cost in training steps",
    "low_precision_stability": "every scheme, 50 updates at 18-18 under fp16 (bf16): finite losses, stable loss scale",
    "multi30k_race": "18-18 race on Multi30k: same updates each, valid loss, sacreBLEU on test_2016_flickr",
}
WRITE_MARGIN_S = 10  # kept free at the end of the budget for writing the result


def settings(smoke):
    """The sizes of every step: the real ones, or --smoke's tiny ones (same code path)."""
    if smoke:
        return {"dims": TINY_DIMS, "dims_desc": "tiny smoke dimensions: d=16, FFN 32, 2 heads, shared embeddings",
                "layers": ["1-1", "2-2"], "deep": "2-2", "batch_tokens": [256, 1024], "rounds": 1, "warmup": 0,
                "gen_sentences": 8, "gen_batch": 8, "gen_len": 4, "profile_rounds": 1, "stability_updates": 4,
                "stability_tokens": 512, "race_tokens": 1024, "race_max_updates": 3, "race_min_updates": 1,
                "race_test_sentences": 16, "race_gen_batch": 16, "eval_tokens": 4096}
    return {"dims": WMT_EN_DE_DIMS, "dims_desc": "transformer_wmt_en_de: d=512, FFN 2048, 8 heads, shared embeddings",
            "layers": ["6-6", "18-18"], "deep": "18-18", "batch_tokens": [8192, 32768], "rounds": 4, "warmup": 1,
            "gen_sentences": 128, "gen_batch": 128, "gen_len": 20, "profile_rounds": 4, "stability_updates": 50,
            "stability_tokens": 8192, "race_tokens": 8192, "race_max_updates": 4000, "race_min_updates": 20,
            "race_test_sentences": None, "race_gen_batch": 128, "eval_tokens": 16384}


# ---- device and precision ------------------------------------------------------------------------------------------
def device_info(device):
    import torch
    import fairseq
    info = {"type": device, "torch": torch.__version__, "fairseq": fairseq.__version__,
            "python": platform.python_version(), "cuda": torch.version.cuda}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(name=torch.cuda.get_device_name(0),
                    capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                    memory_gib=round(props.total_memory / 2 ** 30, 1), cudnn=torch.backends.cudnn.version(),
                    driver=_nvidia_smi("driver_version"), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                    bf16_supported=torch.cuda.is_bf16_supported())
    else:
        info.update(name=cpu_name(), driver=None, nproc=os.cpu_count(), torch_threads=torch.get_num_threads())
    return info


def _nvidia_smi(field):
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def precision_skip_reason(precision, device):
    """Why ``precision`` cannot run on ``device`` (None: it can)."""
    import torch
    if precision == "fp16" and device == "cpu":
        return "fp16 on the CPU: fairseq's --fp16 trainer needs CUDA (its FP16Optimizer calls torch.cuda); not faked"
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        return "bf16: this GPU does not support bfloat16"
    return None


def is_out_of_memory(err):
    import torch
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err)


class Memory:
    """CUDA memory counters (bytes); on the CPU every reading is None (peak GPU memory is a CUDA measurement)."""

    def __init__(self, device):
        import torch
        self.cuda = torch.cuda if device == "cuda" else None

    def allocated(self):
        return self.cuda.memory_allocated() if self.cuda else None

    def reset_peak(self):
        if self.cuda:
            self.cuda.reset_peak_memory_stats()

    def peak(self):
        return self.cuda.max_memory_allocated() if self.cuda else None


def _mib(n):
    return None if n is None else round(n / 2 ** 20, 1)


# ---- budget --------------------------------------------------------------------------------------------------------
class Budget:
    """Wall-clock budget from the process start; a pass's deadline is its share of the time left."""

    def __init__(self, minutes, started):
        self.end = started + minutes * 60 - WRITE_MARGIN_S

    def left(self):
        return self.end - time.monotonic()

    def pass_deadline(self, name):
        names = list(SHARES)
        rest = sum(SHARES[n] for n in names[names.index(name):])
        return time.monotonic() + max(0.0, self.left()) * SHARES[name] / rest


class Step:
    """One step's record in the report: rows measured, units skipped (with the reason), units failed."""

    def __init__(self, report, name):
        self.rec = report["steps"][name]
        self.rec["status"] = "running"

    def row(self, row):
        self.rec["rows"].append(row)

    def skip(self, unit, reason, quiet=False):
        if not quiet:
            log(f"skipped {unit}: {reason}")
        self.rec["skipped"].append({"unit": unit, "reason": reason})

    def fail(self, unit, message, trace=""):
        log(f"FAILED {unit}: {message}\n{trace}")
        self.rec["failed"].append({"unit": unit, "error": message[:2000]})

    def finish(self):
        r = self.rec
        r["status"] = ("failed" if r["failed"] else "skipped" if not r["rows"] else
                       "partial" if r["skipped"] else "measured")


def fits(step, unit, deadline, estimate_s):
    """True if a unit estimated to take ``estimate_s`` seconds (None: unknown) can start before ``deadline``."""
    left = deadline - time.monotonic()
    if left <= 0 or (estimate_s is not None and estimate_s > left):
        step.skip(unit, f"budget: {max(left, 0):.0f} s left for this step" +
                  (f", a unit like it took {estimate_s:.0f} s" if estimate_s is not None else ""))
        return False
    return True


# ---- models --------------------------------------------------------------------------------------------------------
class Builder:
    """Builds the benchmarked models with the run's dimensions, device and precision, and measures each model's
    resident GPU memory: allocated after building it and taking its first training step, minus before."""

    def __init__(self, a, cfg, device, memory, save_dir):
        self.a, self.cfg, self.device, self.memory, self.save_dir = a, cfg, device, memory, save_dir

    def train_args(self, precision, extra=()):
        return [*OPTIMIZATION, *PRECISION_FLAGS[precision], *(["--cpu"] if self.device == "cpu" else []),
                "--save-dir", self.save_dir, *extra]

    def __call__(self, name, layers, precision, max_tokens, first_batch, train_extra=()):
        release()
        before = self.memory.allocated()
        m = build(name, layers, self.a.data_bin, max_tokens, dims=self.cfg["dims"],
                  train=self.train_args(precision, train_extra))
        # the first step creates Adam's state (and fp16's master weights); Admin's task profiles ω here
        m["first_step"] = m["trainer"].train_step([first_batch], raise_oom=True)
        synchronize()
        after = self.memory.allocated()
        m["resident_bytes"] = None if before is None else after - before
        return m


def release(*models):
    """Drops the models; on CUDA also collects reference cycles and returns cached blocks, so that the next model's
    memory is measured from a clean allocator (a full gc.collect costs ~0.25 s: not done on the CPU)."""
    import torch
    for m in models:
        m.clear()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def timed_train_with_peak(m, batch, memory, peaks):
    """One training step; appends the model's own peak memory (resident + peak above the allocation at its start)."""
    memory.reset_peak()
    start = memory.allocated()
    t = time_train(m, [batch])
    peak = memory.peak()
    peaks.append(None if peak is None else m["resident_bytes"] + peak - start)
    return t


# ---- pass 1+2: throughput ------------------------------------------------------------------------------------------
def attempt(steps, unit, run_unit, memory_gib):
    """Runs one unit; an error is recorded in ``steps`` (CUDA out of memory as skipped, anything else as failed)
    and the run goes on. Returns None, or the error's message. Memory is released after the ``except`` block, when
    the error's frames are gone."""
    try:
        run_unit()
        release()
        return None
    except Exception as err:  # noqa: BLE001  (recorded; the run goes on with the next unit)
        oom, message, trace = is_out_of_memory(err), f"{type(err).__name__}: {err}", traceback.format_exc()
    release()
    for step in steps:
        if oom:
            step.skip(unit, f"CUDA out of memory on this device ({memory_gib} GiB): {message[:200]}")
        else:
            step.fail(unit, message, trace)
    if not steps:
        log(f"FAILED: {message}\n{trace}")
    return message


def throughput_pass(a, cfg, schemes, precisions, report, save, builder, memory, device, budget):
    train, gen = Step(report, "train_throughput"), Step(report, "generate_throughput")
    deadline = budget.pass_deadline("throughput")
    gib = report["device"].get("memory_gib")
    batches = {n: fixed_batches(a.data_bin, 1, n)[0] for n in cfg["batch_tokens"]}
    gbatches = gen_batches(a.data_bin, cfg["gen_sentences"], cfg["gen_batch"])
    n_sent = sum(len(b["id"]) for b in gbatches)
    took, too_big = {}, set()  # seconds per unit; (precision, layers, tokens) that ran out of memory

    def measure_pair(precision, layers, scheme, vanillas):
        unit = f"{precision} {layers} {scheme}"
        first = batches[cfg["batch_tokens"][0]]
        base = baseline_of(scheme)
        if base not in vanillas:
            vanillas[base] = builder(base, layers, precision, cfg["batch_tokens"][0], first)
        v = vanillas[base]
        s = builder(scheme, layers, precision, cfg["batch_tokens"][0], first)
        ident = {"precision": precision, "layers": layers, "scheme": scheme, "baseline": base,
                 "scheme_params": s["params"], "baseline_params": v["params"]}
        for max_tokens, batch in batches.items():
            if (precision, layers, max_tokens) in too_big:
                train.skip(f"{unit} {max_tokens} tokens", f"CUDA out of memory at this size before ({gib} GiB)")
                continue

            def measure_batch():
                pv, ps = [], []
                res = alternate(lambda: timed_train_with_peak(v, batch, memory, pv),
                                lambda: timed_train_with_peak(s, batch, memory, ps), cfg["rounds"], cfg["warmup"])
                row = {**ident, "batch_max_tokens": max_tokens, "batch_target_tokens": int(batch["ntokens"]),
                       **summarize(res, int(batch["ntokens"]), "tokens_per_s"),
                       "scheme_peak_mib": _mib(max(ps) if ps[0] is not None else None),
                       "baseline_peak_mib": _mib(max(pv) if pv[0] is not None else None),
                       "scheme_resident_mib": _mib(s["resident_bytes"]),
                       "baseline_resident_mib": _mib(v["resident_bytes"])}
                if row["scheme_peak_mib"] is not None:
                    row["peak_memory_ratio"] = round(max(ps) / max(pv), 4)
                train.row(row)
                log(f"train {unit} {max_tokens} tokens: ratio {row['throughput_ratio_median']} "
                    f"[{row['throughput_ratio_min']}, {row['throughput_ratio_max']}], peak MiB "
                    f"{row['scheme_peak_mib']} / {row['baseline_peak_mib']}")

            skipped = len(train.rec["skipped"])
            if attempt([train], f"{unit} {max_tokens} tokens", measure_batch, gib) and \
                    len(train.rec["skipped"]) > skipped:
                too_big.add((precision, layers, max_tokens))
            save()
        gv, gs = make_generator(v, cfg["gen_len"]), make_generator(s, cfg["gen_len"])
        res = alternate(lambda: time_generate(v, gv, gbatches), lambda: time_generate(s, gs, gbatches),
                        cfg["rounds"], cfg["warmup"])
        gen.row({**ident, "sentences": n_sent, "beam": 4, "gen_len_pinned": cfg["gen_len"],
                 **summarize(res, n_sent, "sentences_per_s")})
        log(f"generate {unit}: ratio {gen.rec['rows'][-1]['throughput_ratio_median']}")
        s.clear()  # the scheme model goes; the vanilla one serves the next scheme

    for precision in precisions:
        for layers in cfg["layers"]:
            vanillas = {}
            for scheme in schemes:
                unit = f"{precision} {layers} {scheme}"
                why = precision_skip_reason(precision, device)
                estimate = took.get((precision, layers), took.get(layers))
                if why or not fits(train, unit, deadline, estimate):
                    if why:
                        train.skip(unit, why)
                    gen.skip(unit, why or train.rec["skipped"][-1]["reason"], quiet=True)
                    continue
                t0 = time.monotonic()
                if attempt([train, gen], unit, lambda: measure_pair(precision, layers, scheme, vanillas), gib):
                    release(*vanillas.values())  # rebuilt for the next scheme
                    vanillas = {}
                release()
                took[(precision, layers)] = took[layers] = time.monotonic() - t0
                save()
            release(*vanillas.values())
    train.finish()
    gen.finish()
    save()


# ---- pass 3: Admin's profiling under fp16/bf16 ---------------------------------------------------------------------
def omega_tensors(model):
    return [layer.omega for stack in ("encoder", "decoder") for layer in model.scheme_layers(stack)]


def profiling_pass(a, cfg, report, save, builder, device, budget):
    from fairseq_admin.profiling import profile_model
    step = Step(report, "admin_profiling")
    deadline = budget.pass_deadline("admin_profiling")
    batch = fixed_batches(a.data_bin, 1, cfg["batch_tokens"][0])[0]
    took = None

    def measure(precision):
        m = builder("admin", cfg["deep"], precision, cfg["batch_tokens"][0], batch)
        model = m["model"]
        profiled_first = bool(model.omega_ready.item()) if hasattr(model, "omega_ready") else None
        omegas = omega_tensors(model)
        sample = to_model_device(m, batch)
        res = alternate(lambda: time_train(m, [batch]), lambda: time_call(lambda: profile_model(model, sample)),
                        cfg["profile_rounds"], cfg["warmup"])
        ratios = sorted(res["wall_time_ratios"])
        after = omega_tensors(model)
        step.row({"precision": precision, "layers": cfg["deep"], "batch_target_tokens": int(batch["ntokens"]),
                  "profiled_at_first_batch": profiled_first,
                  "weight_dtype": str(model.encoder.layers[0].fc1.weight.dtype),
                  "omega_dtypes": sorted({str(w.dtype) for w in omegas + after}),
                  "omega_finite": all(bool(w.float().isfinite().all()) for w in after),
                  "omega_range": [round(min(float(w.min()) for w in after), 4),
                                  round(max(float(w.max()) for w in after), 4)],
                  "profile_over_train_step_median": round(statistics.median(ratios), 4),
                  "profile_over_train_step_min": round(ratios[0], 4),
                  "profile_over_train_step_max": round(ratios[-1], 4),
                  "train_step_s": res["vanilla_wall_s"], "profile_s": res["scheme_wall_s"]})
        log(f"profiling {precision} {cfg['deep']} admin: {step.rec['rows'][-1]['profile_over_train_step_median']} "
            f"training steps, omega {step.rec['rows'][-1]['omega_dtypes']}")

    for precision in ("fp16", "bf16"):
        unit = f"{precision} {cfg['deep']} admin"
        why = precision_skip_reason(precision, device) or (
            None if "admin" in report["setup"]["schemes"] else "admin is not among --schemes")
        if why:
            step.skip(unit, why)
            continue
        if not fits(step, unit, deadline, took):
            continue
        t0 = time.monotonic()
        attempt([step], unit, lambda: measure(precision), report["device"].get("memory_gib"))
        took = time.monotonic() - t0
        save()
    step.finish()
    save()


# ---- pass 4: 50 updates under fp16 / bf16 --------------------------------------------------------------------------
def loss_scale(m):
    scaler = getattr(m["trainer"].optimizer, "scaler", None)
    return None if scaler is None else float(scaler.loss_scale)


def train_updates(m, batches, updates, max_steps):
    """Training steps on successive batches until ``updates`` updates (an fp16 overflow skips its update) or
    ``max_steps`` steps; per step the loss (bits; None on overflow) and the loss scale after it."""
    trainer, trace, stopped = m["trainer"], [], None
    start = trainer.get_num_updates()
    synchronize()
    t0 = time.perf_counter()
    for i in range(max_steps):
        if trainer.get_num_updates() - start >= updates:
            break
        try:
            out = trainer.train_step([batches[i % len(batches)]], raise_oom=True)  # None: fp16 overflow
        except FloatingPointError as err:  # fairseq: minimum loss scale reached, or NaN/Inf gradients
            stopped = f"FloatingPointError: {err}"
            break
        trace.append({"loss": None if not out else float(out["loss"]), "loss_scale": loss_scale(m)})
    synchronize()
    return {"updates": trainer.get_num_updates() - start, "steps": len(trace),
            "seconds": round(time.perf_counter() - t0, 3), "trace": trace, "stopped": stopped}


def stability_verdict(run, updates, precision):
    losses = [t["loss"] for t in run["trace"] if t["loss"] is not None]
    overflow_steps = [i for i, t in enumerate(run["trace"]) if t["loss"] is None]
    scales = [t["loss_scale"] for t in run["trace"] if t["loss_scale"] is not None]
    finite = bool(losses) and run["updates"] == updates and not run["stopped"] and all(map(math.isfinite, losses))
    late = [i for i in overflow_steps if i >= len(run["trace"]) - updates // 2]
    return {"finite_losses": finite, "overflows": len(overflow_steps), "late_overflows": len(late),
            "loss_scale_min": min(scales) if scales else None, "loss_scale_final": scales[-1] if scales else None,
            "stable_loss_scale": (finite and not late) if precision == "fp16" else None,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "seconds_per_update": round(run["seconds"] / max(run["updates"], 1), 4)}


def train_model(builder, scheme, layers, precision, max_tokens, batches, updates, train_extra=()):
    """A model built and trained ``updates`` updates on successive ``batches`` (the first step included)."""
    m = builder(scheme, layers, precision, max_tokens, batches[0], train_extra)
    run = train_updates(m, batches[1:], updates - 1, 2 * updates)
    first = m["first_step"]
    run["trace"].insert(0, {"loss": None if not first else float(first["loss"]), "loss_scale": loss_scale(m)})
    run["updates"] += 1 if first else 0
    return m, run


def stability_pass(a, cfg, schemes, report, save, builder, device, budget):
    step = Step(report, "low_precision_stability")
    deadline = budget.pass_deadline("low_precision_stability")
    updates = cfg["stability_updates"]
    batches = fixed_batches(a.data_bin, updates + 1, cfg["stability_tokens"])
    took = None

    def measure(precision, scheme):
        _, run = train_model(builder, scheme, cfg["deep"], precision, cfg["stability_tokens"], batches, updates)
        row = {"precision": precision, "layers": cfg["deep"], "scheme": scheme, "max_tokens": cfg["stability_tokens"],
               "stopped": run["stopped"], "updates": run["updates"], **stability_verdict(run, updates, precision),
               "trace": run["trace"]}
        step.row(row)
        log(f"stability {precision} {cfg['deep']} {scheme}: {row['updates']} updates, finite {row['finite_losses']}, "
            f"overflows {row['overflows']}, loss {row['first_loss']} -> {row['last_loss']}")

    for precision in ("fp16", "bf16"):
        for scheme in schemes:
            unit = f"{precision} {cfg['deep']} {scheme}"
            why = precision_skip_reason(precision, device)
            if why:
                step.skip(unit, why)
                continue
            if not fits(step, unit, deadline, took):
                continue
            t0 = time.monotonic()
            attempt([step], unit, lambda: measure(precision, scheme), report["device"].get("memory_gib"))
            took = time.monotonic() - t0
            save()
    step.finish()
    save()


# ---- pass 5: the Multi30k race -------------------------------------------------------------------------------------
def validation_loss(m, batches):
    """fairseq's validation loss: label-smoothed loss / target tokens and nll / target tokens, in bits."""
    task, model, criterion = m["task"], m["model"], m["trainer"].criterion
    loss = nll = sample_size = ntokens = 0.0
    for b in batches:
        _, size, out = task.valid_step(to_model_device(m, b), model, criterion)
        loss, nll = loss + float(out["loss"]), nll + float(out["nll_loss"])
        sample_size, ntokens = sample_size + float(size), ntokens + float(out["ntokens"])
    return {"valid_loss": round(loss / sample_size / math.log(2), 4),
            "valid_nll_loss": round(nll / ntokens / math.log(2), 4)}


def test_bleu(m, data, batches, sentences):
    """Beam 4, lenpen 0.6, output at most 1.2*source+10 tokens (as depth_grid.py's fairseq-generate), sacreBLEU."""
    from fairseq.sequence_generator import SequenceGenerator
    tgt = m["task"].target_dictionary
    gen = SequenceGenerator([m["model"]], tgt, beam_size=4, max_len_a=1.2, max_len_b=10, len_penalty=0.6)
    m["model"].eval()
    pieces = {}
    for b in batches:
        hypos = m["task"].inference_step(gen, [m["model"]], to_model_device(m, b))
        for sid, h in zip(b["id"].tolist(), hypos):
            pieces[sid] = tgt.string(h[0]["tokens"].int().cpu())
    detok, score = sacrebleu_of_pieces(data, pieces, sentences)
    return {**score, **hypothesis_stats(detok)}


def race_pass(a, cfg, schemes, report, save, builder, device, budget):
    step = Step(report, "multi30k_race")
    deadline = budget.pass_deadline("multi30k_race")
    precision = "fp16" if device == "cuda" else "fp32"
    data = os.path.dirname(a.data_bin)
    train_batches = fixed_batches(a.data_bin, cfg["race_max_updates"] + 1, cfg["race_tokens"])  # repeats past 1 epoch
    valid = fixed_batches(a.data_bin, None, cfg["eval_tokens"], split="valid", shuffle=False)
    test_n = cfg["race_test_sentences"] or 10 ** 9
    tests = gen_batches(a.data_bin, test_n, cfg["race_gen_batch"])
    sentences = sum(len(b["id"]) for b in tests)
    report["steps"]["multi30k_race"]["setting"] = {
        "layers": cfg["deep"], "dims": cfg["dims_desc"], "precision": precision, "max_tokens": cfg["race_tokens"],
        "optimization": "Adam (0.9, 0.98), lr 1e-3 inverse_sqrt from 1e-7, warm-up min(200, updates // 4), "
                        "label smoothing 0.1, dropout 0.1, seed 1", "test_sentences": sentences}
    gib = report["device"].get("memory_gib")
    calibrate_updates = 3

    def calibrate(scheme):
        """Times the first scheme's first updates; sets the race's update count from the time left."""
        t0 = time.monotonic()
        _, run = train_model(builder, scheme, cfg["deep"], precision, cfg["race_tokens"], train_batches,
                             calibrate_updates + 1, _race_opts(cfg["race_max_updates"]))
        per_update = run["seconds"] / max(run["updates"] - 1, 1)
        build_s = time.monotonic() - t0 - run["seconds"]
        fit = int((0.7 * (deadline - time.monotonic()) / len(schemes) - build_s) / per_update)
        step.rec["setting"].update(updates=min(cfg["race_max_updates"], fit), calibration_s_per_update=round(
            per_update, 4), warmup_updates=min(200, max(1, min(cfg["race_max_updates"], fit) // 4)))
        if fit < cfg["race_min_updates"]:
            step.rec["setting"]["too_short"] = (f"budget: about {max(fit, 0)} updates per scheme would fit "
                                                f"(< {cfg['race_min_updates']}); {per_update:.3f} s per update")

    def race(scheme, updates):
        m, run = train_model(builder, scheme, cfg["deep"], precision, cfg["race_tokens"], train_batches, updates,
                             _race_opts(updates))
        verdict = stability_verdict(run, updates, precision)
        t_eval = time.monotonic()
        row = {"scheme": scheme, "layers": cfg["deep"], "precision": precision, "updates": run["updates"],
               "train_seconds": run["seconds"], "stopped": run["stopped"], "final_train_loss": verdict["last_loss"],
               "finite_losses": verdict["finite_losses"], "overflows": verdict["overflows"],
               **validation_loss(m, valid), **test_bleu(m, data, tests, cfg["race_test_sentences"])}
        row["eval_seconds"] = round(time.monotonic() - t_eval, 2)
        step.row(row)
        log(f"race {precision} {cfg['deep']} {scheme}: {row['updates']} updates, valid loss {row['valid_loss']}, "
            f"BLEU {row['bleu']}")

    took = None
    for scheme in schemes:
        unit = f"{precision} {cfg['deep']} {scheme}"
        setting = step.rec["setting"]
        if "too_short" in setting:
            step.skip(unit, setting["too_short"])
            continue
        if not fits(step, unit, deadline, took):
            continue
        if "updates" not in setting and attempt([step], f"{unit} (calibration)", lambda: calibrate(scheme), gib):
            continue
        if "too_short" in setting:
            step.skip(unit, setting["too_short"])
            continue
        t0 = time.monotonic()
        attempt([step], unit, lambda: race(scheme, setting["updates"]), gib)
        took = time.monotonic() - t0
        save()
    step.finish()
    save()


def _race_opts(updates):
    return [*RACE_LR, "--warmup-updates", str(min(200, max(1, updates // 4)))]


# ---- report --------------------------------------------------------------------------------------------------------
def new_report(a, cfg, device, schemes, precisions):
    return {"tool": "benchmarks/gpu_check.py", "smoke": a.smoke, "started_utc": datetime.now(timezone.utc).isoformat(),
            "budget_min": a.budget_min, "device": device_info(device), "code": code_version(),
            "command": " ".join([sys.executable] + sys.argv),
            "setup": {"dims": cfg["dims_desc"], "layers": cfg["layers"], "deep": cfg["deep"],
                      "batch_max_tokens": cfg["batch_tokens"], "precisions": precisions, "schemes": schemes,
                      "rounds": cfg["rounds"], "warmup_rounds": cfg["warmup"], "data_bin": a.data_bin,
                      "memory": "CUDA only: resident (allocated after build + first step, minus before) + peak of "
                                "max_memory_allocated above the allocation at the start of the model's own step"},
            "steps": {name: {"title": title, "status": "not started", "rows": [], "skipped": [], "failed": []}
                      for name, title in STEPS.items()}}


def _cell(r):
    return f"{r['throughput_ratio_median']:.3f} [{r['throughput_ratio_min']:.3f}, {r['throughput_ratio_max']:.3f}]"


def _v(x, fmt="{}"):
    return "—" if x is None else fmt.format(x)


def markdown(report):
    d = report["device"]
    out = [f"GPU check ({'SMOKE on the CPU, tiny dimensions: no GPU figures' if report['smoke'] else 'CUDA'}): "
           f"{d.get('name')}, driver {d.get('driver')}, CUDA {d.get('cuda')}, torch {d.get('torch')}, fairseq "
           f"{d.get('fairseq')}; commit {report['code'].get('commit')}; {report['setup']['dims']}; started "
           f"{report['started_utc']}, budget {report['budget_min']} min, elapsed {report.get('elapsed_s')} s.",
           "", "| step | status | rows | skipped | failed |", "|---|---|---|---|---|"]
    for name, s in report["steps"].items():
        out.append(f"| {name} | {s['status']} | {len(s['rows'])} | {len(s['skipped'])} | {len(s['failed'])} |")
    st = report["steps"]
    if st["train_throughput"]["rows"]:
        out += ["", "Training, target tokens/s: throughput ratio scheme / vanilla, median [min, max]; peak GPU memory.",
                "", "| precision | layers | batch tokens (target) | scheme | baseline | ratio | "
                "vanilla / scheme tok/s | peak MiB scheme / vanilla | memory ratio |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in st["train_throughput"]["rows"]:
            out.append(f"| {r['precision']} | {r['layers']} | {r['batch_max_tokens']} ({r['batch_target_tokens']}) | "
                       f"{r['scheme']} | {r['baseline']} | {_cell(r)} | {r['vanilla_tokens_per_s_median']} / "
                       f"{r['scheme_tokens_per_s_median']} | {_v(r['scheme_peak_mib'])} / "
                       f"{_v(r['baseline_peak_mib'])} | {_v(r.get('peak_memory_ratio'), '{:.3f}')} |")
    if st["generate_throughput"]["rows"]:
        out += ["", "Generation (beam 4, pinned length), sentences/s.", "",
                "| precision | layers | scheme | baseline | ratio | vanilla / scheme sent/s |",
                "|---|---|---|---|---|---|"]
        for r in st["generate_throughput"]["rows"]:
            out.append(f"| {r['precision']} | {r['layers']} | {r['scheme']} | {r['baseline']} | {_cell(r)} | "
                       f"{r['vanilla_sentences_per_s_median']} / {r['scheme_sentences_per_s_median']} |")
    if st["admin_profiling"]["rows"]:
        out += ["", "| precision | layers | profiled at first batch | weights | ω dtypes | ω finite | ω range | "
                "profiling / training step |", "|---|---|---|---|---|---|---|---|"]
        for r in st["admin_profiling"]["rows"]:
            out.append(f"| {r['precision']} | {r['layers']} | {r['profiled_at_first_batch']} | {r['weight_dtype']} | "
                       f"{', '.join(r['omega_dtypes'])} | {r['omega_finite']} | {r['omega_range']} | "
                       f"{r['profile_over_train_step_median']:.3f} [{r['profile_over_train_step_min']:.3f}, "
                       f"{r['profile_over_train_step_max']:.3f}] |")
    if st["low_precision_stability"]["rows"]:
        out += ["", "| precision | layers | scheme | updates | finite losses | overflows (late) | loss scale min / "
                "final | stable loss scale | loss first → last | s/update |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in st["low_precision_stability"]["rows"]:
            out.append(f"| {r['precision']} | {r['layers']} | {r['scheme']} | {r['updates']} | {r['finite_losses']} | "
                       f"{r['overflows']} ({r['late_overflows']}) | {_v(r['loss_scale_min'])} / "
                       f"{_v(r['loss_scale_final'])} | {_v(r['stable_loss_scale'])} | {_v(r['first_loss'], '{:.3f}')}"
                       f" → {_v(r['last_loss'], '{:.3f}')} | {r['seconds_per_update']} |")
    race = st["multi30k_race"]
    if race["rows"]:
        s = race.get("setting", {})
        out += ["", f"Race: {s.get('layers')}, {s.get('dims')}, {s.get('precision')}, {s.get('updates')} updates "
                    f"each, {s.get('optimization')}; BLEU on {s.get('test_sentences')} test_2016_flickr sentences.",
                "", "| scheme | updates | train s | valid loss (nll), bits | sacreBLEU | distinct outputs | "
                "overflows |",
                "|---|---|---|---|---|---|---|"]
        for r in race["rows"]:
            out.append(f"| {r['scheme']} | {r['updates']} | {r['train_seconds']} | {r['valid_loss']:.3f} "
                       f"({r['valid_nll_loss']:.3f}) | {r['bleu']} | {r['distinct_hypotheses']}/{r['sentences']} | "
                       f"{r['overflows']} |")
    skipped = [(n, x) for n, s in st.items() for x in s["skipped"]]
    failed = [(n, x) for n, s in st.items() for x in s["failed"]]
    if skipped:
        out += ["", "Skipped:"] + [f"- {n} / {x['unit']}: {x['reason']}" for n, x in skipped]
    if failed:
        out += ["", "FAILED:"] + [f"- {n} / {x['unit']}: {x['error'][:300]}" for n, x in failed]
    return "\n".join(out) + "\n"


# ---- main ----------------------------------------------------------------------------------------------------------
def main(argv=None):
    started = time.monotonic()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-min", type=float, default=None,
                   help="wall-clock minutes for everything (default 9; --smoke: 4, a smoke run takes about 1)")
    p.add_argument("--smoke", action="store_true", help="the same code on the CPU with tiny dimensions (~1 min)")
    p.add_argument("--out", default=None, help="result directory (default benchmarks/results/gpu; --smoke: "
                                               "benchmarks/results/tmp, git-ignored)")
    p.add_argument("--schemes", default=None, help="comma list (default: every scheme of SCHEMES)")
    p.add_argument("--work", default=DEFAULT_WORK, help="Multi30k is prepared in WORK/data (default benchmarks/work)")
    p.add_argument("--raw-dir", default=DEFAULT_RAW, help="raw Multi30k (default ../shared/data/multi30k)")
    p.add_argument("--render", default=None, metavar="JSON", help="print the Markdown of a result file and exit")
    a = p.parse_args(argv)
    if a.render:
        if not os.path.isfile(a.render):
            p.error(f"--render: no file {a.render}")
        print(markdown(json.load(open(a.render))))
        return 0
    a.budget_min = a.budget_min if a.budget_min is not None else (4.0 if a.smoke else 9.0)
    if not a.budget_min > 0:
        p.error(f"--budget-min must be positive, got {a.budget_min}")
    if not os.path.isdir(a.raw_dir) and not os.path.exists(os.path.join(a.work, "data", "data-bin")):
        p.error(f"--raw-dir {a.raw_dir} does not exist and {a.work}/data holds no prepared Multi30k")

    import torch
    from fairseq_admin.schemes import SCHEMES
    schemes = a.schemes.split(",") if a.schemes else list(SCHEMES)
    unknown = [s for s in schemes if s not in SCHEMES]
    if unknown:
        p.error(f"unknown scheme(s) {', '.join(unknown)}; choose from {', '.join(SCHEMES)}")
    if a.smoke:
        device = "cpu"
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    elif torch.cuda.is_available():
        device = "cuda"
        torch.cuda.set_device(0)
    else:
        p.error(f"no CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda}): install the CUDA "
                f"build of the pinned torch (see BENCHMARKS.md, 'GPU check'), or run --smoke on the CPU")
    out_dir = os.path.abspath(a.out or os.path.join(ROOT, "benchmarks", "results", "tmp" if a.smoke else "gpu"))
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"gpu-check-{'smoke-' if a.smoke else ''}"
                                 f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
    a.work = os.path.abspath(a.work)
    a.data_bin = os.path.join(prepare_data(a.work, a.raw_dir, log), "data-bin")
    cfg = settings(a.smoke)
    precisions = ["fp16", "bf16", "fp32"]
    report = new_report(a, cfg, device, schemes, precisions)
    log(f"{'SMOKE on the CPU' if a.smoke else report['device']['name']}: budget {a.budget_min} min, schemes "
        f"{schemes}, {cfg['dims_desc']}; writing {stem}.json and .md after every unit")

    def save():
        report["elapsed_s"] = round(time.monotonic() - started, 1)
        with open(stem + ".json.tmp", "w") as f:
            json.dump(report, f, indent=1)
        os.replace(stem + ".json.tmp", stem + ".json")
        with open(stem + ".md.tmp", "w") as f:
            f.write(markdown(report))
        os.replace(stem + ".md.tmp", stem + ".md")

    save()
    budget = Budget(a.budget_min, started)
    save_dir = tempfile.mkdtemp(prefix="gpu_check_")  # only fairseq's crash.pt could land here
    builder = Builder(a, cfg, device, Memory(device), save_dir)
    passes = [(["train_throughput", "generate_throughput"],
               lambda: throughput_pass(a, cfg, schemes, precisions, report, save, builder, builder.memory, device,
                                       budget)),
              (["admin_profiling"], lambda: profiling_pass(a, cfg, report, save, builder, device, budget)),
              (["low_precision_stability"], lambda: stability_pass(a, cfg, schemes, report, save, builder, device,
                                                                   budget)),
              (["multi30k_race"], lambda: race_pass(a, cfg, schemes, report, save, builder, device, budget))]
    try:
        for names, run_pass in passes:
            error = attempt([], "", run_pass, None)
            if error:  # outside a unit (loading its data, say): the whole step failed
                for name in names:
                    report["steps"][name]["failed"].append({"unit": "(the step)", "error": error[:2000]})
                    report["steps"][name]["status"] = "failed"
                save()
    finally:
        shutil.rmtree(save_dir, ignore_errors=True)
        report["finished_utc"] = datetime.now(timezone.utc).isoformat()
        save()
    print(markdown(report))
    log(f"wrote {stem}.json and {stem}.md")
    failed = [n for n, s in report["steps"].items() if s["failed"]]
    if failed:
        log(f"failed units in: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
