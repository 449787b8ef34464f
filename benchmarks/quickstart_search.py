"""The search for the quick start's configuration: 30-minute trials, ranked by how well they translate the validation set.

Every trial is ``scripts/quickstart.sh --no-eval --stop-minutes 30`` with one configuration from TRIALS (at least 18
encoder layers), on the quick start's own data (Multi30k En-De, sentencepiece 8k, prepared once into WORK/data), at
``--threads`` torch threads. fairseq stops it after 30 minutes of training (``--stop-time-hours``, counted across
resumes) and validates there. ``--evaluate`` then translates the validation set (valid.raw.de, 1014 sentences) six
ways (EVALUATIONS: scripts/evaluate.sh, beam 4, with the last 3 interval checkpoints averaged or checkpoint_best.pt,
each at lenpen 0.6, 1.0, 1.5), and the table ranks the trials by their highest validation sacreBLEU: the trial with
the lowest validation loss of the first round emitted one sentence for every input (BENCHMARKS.md, quick start), so
the loss alone does not pick. The test set is never read here.

Results: RESULTS/<trial>.json (configuration, the exact command, wall time of each segment, updates reached, the
validation loss at every checkpoint) and RESULTS/TABLE.md. Re-running skips finished trials and resumes an
interrupted one from its checkpoint_last.pt; two searches may run side by side on disjoint or overlapping --trials
(a lock per trial), e.g. one per core with --threads 1.

    python benchmarks/quickstart_search.py --trials admin-18-6-lr1e-3,admin-18-6-lr2e-3 --threads 1
    python benchmarks/quickstart_search.py --trials admin-18-6-lr1e-3 --evaluate   # validation BLEU of a finished trial
    python benchmarks/quickstart_search.py --table     # TABLE.md from the results so far
"""
import argparse
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from fairseq_admin.cli.quickstart import read_curves  # noqa: E402  (the quick start's own log parsing)

MINUTES = 30.0
# name -> quickstart.sh options; every trial: d=128, ffn 512, 4 heads, Adam (0.9, 0.98), inverse_sqrt, dropout 0.1
TRIALS = {
    "admin-18-6-lr1e-3": dict(scheme="admin", layers="18-6", lr="1e-3", warmup=200, max_tokens=3500),
    "admin-18-6-lr2e-3": dict(scheme="admin", layers="18-6", lr="2e-3", warmup=200, max_tokens=3500),
    "admin-18-6-lr2e-3-b2000": dict(scheme="admin", layers="18-6", lr="2e-3", warmup=200, max_tokens=2000),
    "admin-18-3-lr1e-3": dict(scheme="admin", layers="18-3", lr="1e-3", warmup=200, max_tokens=3500),
    "admin-18-3-lr2e-3": dict(scheme="admin", layers="18-3", lr="2e-3", warmup=200, max_tokens=3500),
    "admin-18-3-lr2e-3-b2000": dict(scheme="admin", layers="18-3", lr="2e-3", warmup=200, max_tokens=2000),
    "admin-logn-18-3-lr2e-3-b2000": dict(scheme="admin", layers="18-3", lr="2e-3", warmup=200, max_tokens=2000,
                                         extra=["--admin-init", "O(logn)"]),
    "admin-logn-18-6-lr1e-3": dict(scheme="admin", layers="18-6", lr="1e-3", warmup=200, max_tokens=3500,
                                   extra=["--admin-init", "O(logn)"]),
    "admin-logn-18-6-lr2e-3": dict(scheme="admin", layers="18-6", lr="2e-3", warmup=200, max_tokens=3500,
                                   extra=["--admin-init", "O(logn)"]),
    "deepnorm-18-6-lr1e-3": dict(scheme="deepnorm", layers="18-6", lr="1e-3", warmup=200, max_tokens=3500),
    "deepnorm-18-6-lr2e-3": dict(scheme="deepnorm", layers="18-6", lr="2e-3", warmup=200, max_tokens=3500),
    "b2t-18-6-lr1e-3": dict(scheme="b2t", layers="18-6", lr="1e-3", warmup=200, max_tokens=3500),
    "b2t-18-6-lr2e-3": dict(scheme="b2t", layers="18-6", lr="2e-3", warmup=200, max_tokens=3500),
}


# How a trial's model translates the validation set, each a scripts/evaluate.sh run at beam 4: label -> (checkpoints
# averaged, length penalty). "avg3" is the quick start's evaluation up to 0.4.0 (the last 3 interval checkpoints,
# lenpen 0.6); with checkpoint_best.pt alone and two more length penalties, the evaluation is chosen on the
# validation set too.
EVALUATIONS = (("avg3", 3, 0.6), ("avg3-lenpen1", 3, 1.0), ("avg3-lenpen1.5", 3, 1.5),
               ("best", 1, 0.6), ("best-lenpen1", 1, 1.0), ("best-lenpen1.5", 1, 1.5))


def log(msg):
    print(f"[quickstart_search {datetime.now(timezone.utc):%H:%M:%SZ}] {msg}", flush=True)


def trial_command(name, data, out, threads, minutes=MINUTES):
    t = TRIALS[name]
    cmd = ["bash", os.path.join(ROOT, "scripts", "quickstart.sh"), "--data", data, "--out", out, "--no-eval",
           "--scheme", t["scheme"], "--layers", t["layers"], "--lr", t["lr"], "--warmup", str(t["warmup"]),
           "--max-tokens", str(t["max_tokens"]), "--threads", str(threads), "--stop-minutes", f"{minutes:g}",
           "--max-update", "100000"]
    if t.get("extra"):
        cmd += ["--", *t["extra"]]
    return cmd


def valid_curve(train_log):
    """[{update, nll_loss}] of every validation in the log (a resumed run's repeats keep the last)."""
    if not os.path.exists(train_log):
        return []
    return [{"update": u, "nll_loss": v} for u, v in read_curves(train_log)[1]]


def training_state(ckpt):
    """(updates, seconds of training) saved in checkpoint_last.pt, or (0, 0.0)."""
    if not os.path.exists(ckpt):
        return 0, 0.0
    from fairseq_admin.checkpoint_safety import load_checkpoint

    state = load_checkpoint(ckpt)
    return (int(state["optimizer_history"][-1]["num_updates"]),
            float(state.get("extra_state", {}).get("previous_training_time", 0.0)))


def _env(threads=None):
    """This interpreter's environment for the scripts: its bin/ first on PATH, and as the quick start's venv."""
    venv = os.path.dirname(os.path.dirname(sys.executable))
    env = dict(os.environ, PYTHON=sys.executable, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    env.setdefault("FAIRSEQ_ADMIN_VENV", venv)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def prepare_data(args):
    data = os.path.join(args.work, "data")
    with open(os.path.join(args.work, "data.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second search waits for the first one's preparation
        subprocess.run(["bash", os.path.join(ROOT, "data-prep", "prepare-multi30k.sh"), "--out", data, "--raw-dir",
                        args.raw_dir, "--vocab-size", "8000", "--workers", "1"], check=True, env=_env())
    return data


def run_trial(args, name, data):
    result_path = os.path.join(args.results, f"{name}.json")
    if os.path.exists(result_path):
        log(f"{name}: finished before ({result_path}); skipped")
        return
    out = os.path.join(args.work, name)
    os.makedirs(out, exist_ok=True)
    lock = open(os.path.join(out, "trial.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"{name}: another search is running it; skipped")
        return
    t = TRIALS[name]
    cmd = trial_command(name, data, out, args.threads, args.minutes)
    state_path = os.path.join(out, "segments.json")
    segments = json.load(open(state_path)) if os.path.exists(state_path) else []
    train_log = os.path.join(out, f"train-{t['scheme']}_{t['layers']}.log")
    ckpt = os.path.join(out, "checkpoints", f"{t['scheme']}_{t['layers']}", "checkpoint_last.pt")
    log(f"{name}: {'resuming' if segments else 'starting'}: {' '.join(cmd)}")
    began = time.time()
    with open(os.path.join(out, "quickstart.out"), "a") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env(args.threads)).returncode
    segments.append({"start": datetime.fromtimestamp(began, timezone.utc).isoformat(), "seconds": time.time() - began,
                     "rc": rc, "load_average_at_end": os.getloadavg()[0]})
    with open(state_path + ".tmp", "w") as f:
        json.dump(segments, f, indent=1)
    os.replace(state_path + ".tmp", state_path)
    updates, trained = training_state(ckpt)
    if rc != 0 or trained < 60 * args.minutes:
        raise SystemExit(f"{name}: quickstart.sh exited {rc} after {trained:.0f} s of training (of "
                         f"{60 * args.minutes:.0f}); see {out}/quickstart.out; re-run to resume")
    curve = valid_curve(train_log)
    result = {"trial": name, "config": t, "command": cmd, "threads": args.threads, "minutes": args.minutes,
              "updates": updates, "training_seconds": round(trained, 1),
              "wall_seconds": round(sum(s["seconds"] for s in segments), 1), "segments": segments,
              "valid_curve": curve, "final_valid_nll": curve[-1]["nll_loss"] if curve else None,
              "cpu": _cpu(), "commit": _commit(), "finished": datetime.now(timezone.utc).isoformat()}
    os.makedirs(args.results, exist_ok=True)
    with open(result_path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(result_path + ".tmp", result_path)
    log(f"{name}: {updates} updates in {trained:.0f} s of training, validation nll {result['final_valid_nll']}")


def evaluate_trial(args, name, data):
    """Validation sacreBLEU of a finished trial, written into its RESULTS/<trial>.json under "valid_eval"."""
    result_path = os.path.join(args.results, f"{name}.json")
    if not os.path.exists(result_path):
        log(f"{name}: not trained yet ({result_path} missing); not evaluated")
        return
    with open(result_path) as f:
        result = json.load(f)
    if all(label in result.get("valid_eval", {}) for label, _, _ in EVALUATIONS):
        log(f"{name}: evaluated before; skipped")
        return
    t = TRIALS[name]
    ckpts = os.path.join(args.work, name, "checkpoints", f"{t['scheme']}_{t['layers']}")
    workdir = os.path.join(args.work, name, "valid-eval")
    evaluations = result.get("valid_eval", {})
    for label, num, lenpen in EVALUATIONS:
        if label in evaluations:
            continue
        out_json = os.path.join(workdir, f"{label}.json")
        cmd = ["bash", os.path.join(ROOT, "scripts", "evaluate.sh"), "--pair", "en-de", "--checkpoints", ckpts,
               "--data", os.path.join(data, "data-bin"), "--spm", os.path.join(data, "spm.model"),
               "--ref", os.path.join(data, "valid.raw.de"), "--subset", "valid", "--num-checkpoints", str(num),
               "--average-by", "update", "--beam", "4", "--lenpen", str(lenpen), "--cpu", "--workdir", workdir,
               "--out", out_json]
        log(f"{name}: validation BLEU ({label}): {' '.join(cmd)}")
        began = time.time()
        with open(workdir + ".out", "a") as f:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env(args.threads)).returncode
        if rc != 0:
            raise SystemExit(f"{name}: evaluate.sh exited {rc}; see {workdir}.out")
        with open(out_json) as f:
            ev = json.load(f)
        with open(ev["hypotheses_file"], encoding="utf-8") as f:
            hyps = f.read().splitlines()
        evaluations[label] = {"sacrebleu": round(ev["sacrebleu"], 2), "signature": ev["sacrebleu_signature"],
                              "distinct_outputs": len(set(hyps)), "sentences": len(hyps), "lenpen": lenpen,
                              "checkpoints": [os.path.basename(c) for c in ev["checkpoints"]],
                              "command": cmd, "seconds": round(time.time() - began, 1)}
        log(f"{name}: valid sacreBLEU ({label}) {ev['sacrebleu']:.2f}, {len(set(hyps))} distinct of {len(hyps)}")
    result["valid_eval"] = evaluations
    with open(result_path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(result_path + ".tmp", result_path)


def _commit():
    """The commit of the quick start the trial ran (with ``+dirty`` when scripts/ or fairseq_admin/ differ from it)."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "scripts", "fairseq_admin"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def _cpu():
    try:
        from common import cpu_name  # benchmarks/common.py
        return cpu_name()
    except Exception:  # the name is a label only
        return None


def write_table(results_dir):
    """RESULTS/TABLE.md: the trials ranked by validation sacreBLEU (each under its best evaluation), unevaluated last."""
    rows = []
    for name in sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []:
        if name.endswith(".json"):
            with open(os.path.join(results_dir, name)) as f:
                rows.append(json.load(f))

    def valid(r, label, key):
        return r.get("valid_eval", {}).get(label, {}).get(key)

    def top(r):  # the trial's validation sacreBLEU under its best evaluation
        return max((e["sacrebleu"] for e in r.get("valid_eval", {}).values()), default=None)

    rows.sort(key=lambda r: (top(r) is None, -(top(r) or 0), r["final_valid_nll"] or 0))
    minutes = sorted({r["minutes"] for r in rows}) or [MINUTES]
    lines = [f"# Quick-start search: {'/'.join(f'{m:g}' for m in minutes)}-minute trials, ranked by validation "
             "sacreBLEU",
             "",
             "Best first: the highest validation sacreBLEU among the evaluations (beam 4; the last 3 interval "
             "checkpoints averaged (avg3) or checkpoint_best.pt (best), each at lenpen 0.6 / 1.0 / 1.5; in brackets the "
             "distinct outputs of 1014); trials not evaluated yet (`--evaluate`) last, by validation nll. "
             "`python benchmarks/quickstart_search.py --trials NAME` re-runs a trial; each JSON holds its exact "
             "commands and every validation.",
             "",
             "| trial | scheme | layers | lr | warm-up | tokens/batch | extra | threads | updates | "
             "valid nll (bits) at the end | " + " | ".join(f"valid sacreBLEU: {label}" for label, _, _ in EVALUATIONS)
             + " |",
             "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(EVALUATIONS)]
    for r in rows:
        c = r["config"]
        cells = []
        for label, _, _ in EVALUATIONS:
            bleu = valid(r, label, "sacrebleu")
            cells.append("—" if bleu is None else f"{bleu:.2f} ({valid(r, label, 'distinct_outputs')})")
        lines.append(f"| {r['trial']} | {c['scheme']} | {c['layers']} | {c['lr']} | {c['warmup']} | "
                     f"{c['max_tokens']} | {' '.join(c.get('extra', [])) or '—'} | {r['threads']} | {r['updates']} | "
                     f"{r['final_valid_nll']:.3f} | {' | '.join(cells)} |")
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, "TABLE.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return rows


def make_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", default=",".join(TRIALS), help="comma-separated, run in this order (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per trial (default 1)")
    p.add_argument("--minutes", type=float, default=MINUTES, help=argparse.SUPPRESS)  # tests: a short budget
    p.add_argument("--work", default=os.path.join(HERE, "work", "quickstart-search"))
    p.add_argument("--results", default=os.path.join(HERE, "results", "quickstart-search"))
    p.add_argument("--raw-dir", default=os.path.join(os.path.dirname(ROOT), "shared", "data", "multi30k"))
    p.add_argument("--evaluate", action="store_true",
                   help="translate the validation set with each finished trial (train the unfinished ones first)")
    p.add_argument("--table", action="store_true", help="only write RESULTS/TABLE.md from the results so far")
    p.add_argument("--list", action="store_true", help="print the trials and their commands, run nothing")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    names = [n for n in args.trials.split(",") if n]
    unknown = [n for n in names if n not in TRIALS]
    if unknown:
        raise SystemExit(f"quickstart_search.py: unknown trial {unknown[0]!r}; known: {', '.join(TRIALS)}")
    if args.threads < 1 or args.minutes <= 0:
        raise SystemExit("quickstart_search.py: --threads must be at least 1")
    if args.table:
        write_table(args.results)
        return 0
    if args.list:
        for n in names:
            print(n, " ".join(trial_command(n, "WORK/data", f"WORK/{n}", args.threads, args.minutes)))
        return 0
    if not os.path.isdir(args.raw_dir):
        raise SystemExit(f"quickstart_search.py: {args.raw_dir} (Multi30k) does not exist; pass --raw-dir")
    os.makedirs(args.work, exist_ok=True)
    data = prepare_data(args)
    for n in names:
        run_trial(args, n, data)
        if args.evaluate:
            evaluate_trial(args, n, data)
        write_table(args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
