"""Deployment speed: fairseq-generate (plugin) vs fairseq-generate (exported) vs CTranslate2 float32 / int8.

    python benchmarks/deploy_speed.py --checkpoint CKPT.pt --data DATA_BIN --spm spm.model --reference test.raw.de \\
        [--beam 4] [--lenpen 0.6] [--batch-size 32] [--threads 1] [--work DIR] [--out results/deploy.json]

1. exports CKPT with ``fairseq-admin-export`` and converts the export with CTranslate2's ``ct2-fairseq-converter``;
2. translates the binarized ``--subset`` (default test) four ways, each in a fresh process, with the same beam, length
   penalty and maximum length (fairseq's default 200 tokens): the plugin checkpoint (``fairseq-generate --user-dir``),
   the exported one (plain ``fairseq-generate``), CTranslate2 with ``compute_type`` float32 and int8 (the source is
   the data-bin's own tokens, written as text, so all four read the same input);
3. reports per row: sentences/s of the translation loop alone (fairseq-generate's own "Translated N sentences in Xs"
   figure; CTranslate2: the ``translate_batch`` call), the whole process's wall time (loading included), its peak
   RSS (GNU time's ``%M``), sacreBLEU of the detokenized output against ``--reference``, and the command;
4. checks agreement on the first ``--score-sentences`` sentences with the references as targets: teacher-forced
   per-token log-probabilities of the plugin model vs the exported model (fairseq) vs CTranslate2 float32
   (``score_batch``), max absolute differences.

Writes ``--out`` (JSON) and the same path with ``.md`` (the Markdown table). ``--rows`` picks a subset of
plugin,exported,ct2-float32,ct2-int8.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROWS = ("plugin", "exported", "ct2-float32", "ct2-int8")
TRANSLATED_RE = re.compile(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s \(([\d.]+) sentences/s")
GNU_TIME = "/usr/bin/time"
MAX_LEN = 200  # fairseq-generate's default --max-len-b (with --max-len-a 0)


def log(message: str) -> None:
    print(f"[deploy_speed] {message}", flush=True)


def measured(cmd: List[str], env: Dict[str, str], stdout_path: Path) -> Dict:
    """Run ``cmd`` (stdout to ``stdout_path``), return wall seconds, peak RSS (MiB) and stderr; fail loudly.

    The peak RSS comes from GNU time (``%M``), which forks the command from its own small process: a child forked
    from this Python process would report this process's RSS as its own ``ru_maxrss`` (Linux keeps the pre-exec
    high-water mark across exec)."""
    rss_file = Path(str(stdout_path) + ".maxrss")
    start = time.perf_counter()
    with open(stdout_path, "w") as out, open(str(stdout_path) + ".err", "w") as err:
        code = subprocess.call([GNU_TIME, "-f", "%M %U %S", "-o", str(rss_file), *cmd], stdout=out, stderr=err,
                               env=env)
    wall = time.perf_counter() - start
    stderr = Path(str(stdout_path) + ".err").read_text()
    if code != 0:
        raise SystemExit(f"deploy_speed: error: {' '.join(cmd)} failed:\n{stderr[-3000:]}")
    max_kib, user_s, sys_s = rss_file.read_text().split()[-3:]
    return {"wall_s": wall, "cpu_s": float(user_s) + float(sys_s), "peak_rss_mib": int(max_kib) / 1024,
            "stderr": stderr}


def source_lines(data: str, subset: str) -> List[str]:
    """The binarized ``subset``'s source sentences as text tokens (the data-bin's pieces, <unk> kept)."""
    from fairseq import options, tasks

    task = tasks.setup_task(options.parse_args_and_arch(options.get_generation_parser(), [data]))
    task.load_dataset(subset)
    dataset = task.dataset(subset).src
    src_dict = task.source_dictionary
    return [src_dict.string(dataset[i]) for i in range(len(dataset))]


def ct2_translate(args) -> None:
    """Worker (a fresh process per row): CTranslate2 translate_batch of ``--source``, timing the call only."""
    import ctranslate2

    with open(args.source, encoding="utf-8") as f:
        source = [line.split() for line in f]
    translator = ctranslate2.Translator(args.model_dir, device="cpu", compute_type=args.compute_type,
                                        inter_threads=1, intra_threads=args.threads)
    start = time.perf_counter()
    results = translator.translate_batch(source, beam_size=args.beam, length_penalty=args.lenpen,
                                         max_batch_size=args.batch_size, max_decoding_length=MAX_LEN)
    seconds = time.perf_counter() - start
    with open(args.hypotheses, "w", encoding="utf-8") as f:
        for r in results:
            f.write(" ".join(r.hypotheses[0]) + "\n")
    print(json.dumps({"translate_s": seconds, "sentences": len(source)}))


def token_log_probs(checkpoint: str, data: str, subset: str, n: int, user_dir: bool):
    """(source pieces, target pieces, per-token log-probabilities incl. </s>) of the first ``n`` sentences.
    ``user_dir``: the checkpoint is the plugin's; False: the exported one, which must build as fairseq's own class."""
    import torch
    from fairseq import checkpoint_utils

    # Both loads go through the plugin's loader, the exported model's too (user_dir=False: stock fairseq builds it):
    # it validates the config before fairseq builds anything from it (fairseq evaluates some config strings as
    # Python: fairseq_admin/config_validation.py), which stock fairseq's loader does not.
    import fairseq_admin  # noqa: F401  (installs that loader)

    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data})
    model = models[0].eval()
    if not user_dir and not type(model).__module__.startswith("fairseq."):
        raise SystemExit(f"deploy_speed: error: {checkpoint} built {type(model).__module__}, not stock fairseq's model")
    task.load_dataset(subset)
    dataset = task.dataset(subset)
    src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
    out = []
    with torch.no_grad():
        for i in range(min(n, len(dataset))):
            sample = dataset.collater([dataset[i]])
            lprobs = model.get_normalized_probs(model(**sample["net_input"]), log_probs=True)[0]
            target = sample["target"][0].tolist()
            scores = lprobs[torch.arange(len(target)), torch.tensor(target)].tolist()
            src = [src_dict[t] for t in sample["net_input"]["src_tokens"][0].tolist() if t != src_dict.eos()]
            out.append((src, [tgt_dict[t] for t in target[:-1]], scores))
    return out


def agreement(args, exported: str, ct2_dir: str) -> Dict:
    import ctranslate2

    plugin = token_log_probs(args.checkpoint, args.data, args.subset, args.score_sentences, user_dir=True)
    stock = token_log_probs(exported, args.data, args.subset, args.score_sentences, user_dir=False)
    translator = ctranslate2.Translator(ct2_dir, device="cpu", compute_type="float32", intra_threads=args.threads)
    ct2 = translator.score_batch([s for s, _, _ in stock], [t for _, t, _ in stock])

    def max_diff(a, b):
        return max(abs(x - y) for (_, _, sa), sb in zip(a, b) for x, y in zip(sa, sb))

    return {"sentences": len(stock),
            "plugin_vs_exported_max_abs_logprob_diff": max_diff(plugin, [s for _, _, s in stock]),
            "exported_vs_ct2_float32_max_abs_logprob_diff": max_diff(stock, [r.log_probs for r in ct2])}


def translate_row(name: str, cmd: List[str], env: Dict[str, str], work: Path, spm: str, refs: List[str]) -> Dict:
    """One measured translation of the subset by row ``name``: speed, memory, sacreBLEU."""
    from fairseq_admin.cli.evaluate import parse_generate_output, sacrebleu_score, spm_decode

    stdout = work / f"{name}.out"
    m = measured(cmd, env, stdout)
    if name.startswith("ct2"):
        timing = json.loads(stdout.read_text().strip().splitlines()[-1])
        seconds, n = timing["translate_s"], timing["sentences"]
        pieces = (work / f"{name}.hyp").read_text(encoding="utf-8").splitlines()
    else:
        found = TRANSLATED_RE.findall(m["stderr"] + stdout.read_text())
        if not found:
            raise SystemExit(f"deploy_speed: error: no 'Translated N sentences' line in the {name} output")
        n, per_s = int(found[-1][0].replace(",", "")), float(found[-1][3])
        seconds = n / per_s  # fairseq prints the time to 0.1 s, the rate to 0.01 sentences/s
        with open(stdout, encoding="utf-8") as f:
            pieces = parse_generate_output(f)
    bleu = sacrebleu_score(spm_decode(pieces, spm), refs)
    return {"row": name, "sentences": n, "translate_s": seconds, "sentences_per_s": n / seconds,
            "process_wall_s": m["wall_s"], "process_cpu_s": m["cpu_s"], "peak_rss_mib": m["peak_rss_mib"],
            "sacrebleu": bleu["score"], "bleu_signature": bleu["signature"]}


def run(args) -> Dict:
    from fairseq_admin.cli.evaluate import read_lines_like_sacrebleu

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    exported, ct2_dir = work / "exported.pt", work / "ct2"
    export_cmd = [str(BIN / "fairseq-admin-export"), "--checkpoint", args.checkpoint, "--out", str(exported),
                  "--data", args.data, "--sentencepiece-model", args.spm]
    convert_cmd = [str(BIN / "ct2-fairseq-converter"), "--model_path", str(exported), "--data_dir", args.data,
                   "--output_dir", str(ct2_dir), "--force"]
    for cmd in (export_cmd, convert_cmd):
        log(" ".join(shlex.quote(c) for c in cmd))
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    source = work / f"{args.subset}.source.txt"
    source.write_text("".join(line + "\n" for line in source_lines(args.data, args.subset)), encoding="utf-8")
    refs = read_lines_like_sacrebleu(args.reference)

    generate = [str(BIN / "fairseq-generate"), args.data, "--gen-subset", args.subset, "--beam", str(args.beam),
                "--lenpen", str(args.lenpen), "--batch-size", str(args.batch_size), "--required-batch-size-multiple", "1",
                "--cpu"]  # fairseq main drops a last batch not a multiple of 8 otherwise
    commands = {
        "plugin": generate + ["--path", args.checkpoint, "--user-dir", str(ROOT / "fairseq_admin")],
        "exported": generate + ["--path", str(exported)],
    }
    for compute in ("float32", "int8"):
        commands[f"ct2-{compute}"] = [sys.executable, __file__, "ct2-translate", "--model-dir", str(ct2_dir),
                                      "--source", str(source), "--hypotheses", str(work / f"ct2-{compute}.hyp"),
                                      "--compute-type", compute, "--beam", str(args.beam), "--lenpen",
                                      str(args.lenpen), "--batch-size", str(args.batch_size), "--threads",
                                      str(args.threads)]
    runs: Dict[str, List[Dict]] = {name: [] for name in args.rows}
    for round_ in range(args.repeats):  # rows alternate within each round, so a load change hits them alike
        for name in args.rows:
            cmd = commands[name]
            log(f"{name} (round {round_ + 1}/{args.repeats}): {' '.join(shlex.quote(c) for c in cmd)}")
            runs[name].append(translate_row(name, cmd, env, work, args.spm, refs))
            r = runs[name][-1]
            log(f"{name}: {r['sentences_per_s']:.2f} sentences/s, peak RSS {r['peak_rss_mib']:.0f} MiB, sacreBLEU "
                f"{r['sacrebleu']:.2f}")
    rows = []
    for name, measured_runs in runs.items():
        rates = sorted(r["sentences_per_s"] for r in measured_runs)
        row = dict(measured_runs[0])
        row.update(sentences_per_s=statistics.median(rates), sentences_per_s_runs=[r["sentences_per_s"] for r in
                                                                                 measured_runs],
                   peak_rss_mib=max(r["peak_rss_mib"] for r in measured_runs),
                   translate_s=statistics.median(r["translate_s"] for r in measured_runs),
                   process_wall_s=statistics.median(r["process_wall_s"] for r in measured_runs),
                   process_cpu_s=statistics.median(r["process_cpu_s"] for r in measured_runs),
                   command=" ".join(shlex.quote(c) for c in commands[name]))
        if len({r["sacrebleu"] for r in measured_runs}) != 1:
            row["sacrebleu_runs"] = [r["sacrebleu"] for r in measured_runs]
        rows.append(row)
    result = {"checkpoint": args.checkpoint, "data": args.data, "subset": args.subset, "beam": args.beam,
              "lenpen": args.lenpen, "batch_size": args.batch_size, "threads": args.threads, "max_len": MAX_LEN,
              "repeats": args.repeats,
              "export_command": " ".join(shlex.quote(c) for c in export_cmd),
              "convert_command": " ".join(shlex.quote(c) for c in convert_cmd), "rows": rows,
              "date_utc": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "load": os.getloadavg()}
    if args.score_sentences > 0 and "ct2-float32" in args.rows:
        result["agreement"] = agreement(args, str(exported), str(ct2_dir))
        log(f"agreement: {result['agreement']}")
    return result


def markdown(result: Dict) -> str:
    by_name = {r["row"]: r for r in result["rows"]}
    base = by_name.get("plugin")
    lines = [f"{result['subset']} ({result['rows'][0]['sentences']} sentences), beam {result['beam']}, lenpen "
             f"{result['lenpen']}, batch {result['batch_size']} sentences, {result['threads']} thread(s), "
             f"{result['date_utc']}, load average {', '.join(f'{x:.2f}' for x in result['load'])}", "",
             "| row | sentences/s (median; runs) | vs plugin | translate s | process wall s | process CPU s "
             "| peak RSS MiB | sacreBLEU |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ratio = f"{r['sentences_per_s'] / base['sentences_per_s']:.3f}" if base else "-"
        each = ", ".join(f"{x:.2f}" for x in r.get("sentences_per_s_runs", [r["sentences_per_s"]]))
        lines.append(f"| {r['row']} | {r['sentences_per_s']:.2f} ({each}) | {ratio} | {r['translate_s']:.1f} | "
                     f"{r['process_wall_s']:.1f} | {r.get('process_cpu_s', float('nan')):.1f} | "
                     f"{r['peak_rss_mib']:.0f} | {r['sacrebleu']:.2f} |")
    lines += ["", "Commands:", "", "```bash", result["export_command"], result["convert_command"]]
    lines += [f"# {r['row']}\n{r['command']}" for r in result["rows"]]
    lines += ["```"]
    if "agreement" in result:
        a = result["agreement"]
        lines += ["", f"Teacher-forced per-token log-probabilities on the first {a['sentences']} sentences "
                      f"(references as targets): plugin vs exported max |Δ| = "
                      f"{a['plugin_vs_exported_max_abs_logprob_diff']:.2e}; exported (fairseq) vs CTranslate2 "
                      f"float32 score_batch max |Δ| = {a['exported_vs_ct2_float32_max_abs_logprob_diff']:.2e}."]
    if result["rows"]:
        lines += ["", f"BLEU signature: {result['rows'][0]['bleu_signature']}"]
    return "\n".join(lines) + "\n"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a plugin checkpoint (postln, preln, admin, deepnorm)")
    p.add_argument("--data", required=True, help="its data-bin (dictionaries and the binarized --subset)")
    p.add_argument("--spm", required=True, help="the sentencepiece model (to detokenize for sacreBLEU)")
    p.add_argument("--reference", required=True, help="raw reference translations of --subset, one a line")
    p.add_argument("--subset", default="test")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--lenpen", type=float, default=0.6)
    p.add_argument("--batch-size", type=int, default=32, help="sentences per batch (fairseq and CTranslate2)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="rounds (rows alternate in each); the median is reported")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    p.add_argument("--score-sentences", type=int, default=100, help="sentences for the agreement check (0: skip)")
    p.add_argument("--work", default=str(ROOT / "benchmarks" / "work" / "deploy"), help="exports, outputs")
    p.add_argument("--out", default=None, help="result JSON (default WORK/deploy_speed.json); Markdown beside it")
    return p


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "ct2-translate":
        w = argparse.ArgumentParser(prog="deploy_speed.py ct2-translate")
        for name in ("--model-dir", "--source", "--hypotheses", "--compute-type"):
            w.add_argument(name, required=True)
        w.add_argument("--beam", type=int, required=True)
        w.add_argument("--lenpen", type=float, required=True)
        w.add_argument("--batch-size", type=int, required=True)
        w.add_argument("--threads", type=int, default=1)
        ct2_translate(w.parse_args(argv[1:]))
        return 0
    args = get_parser().parse_args(argv)
    args.rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"deploy_speed: error: unknown --rows {unknown}; choose from {', '.join(ROWS)}")
    for flag, path, kind in (("--checkpoint", args.checkpoint, "file"), ("--data", args.data, "dir"),
                             ("--spm", args.spm, "file"), ("--reference", args.reference, "file")):
        if not (os.path.isfile(path) if kind == "file" else os.path.isdir(path)):
            raise SystemExit(f"deploy_speed: error: {flag} {path}: no such {'file' if kind == 'file' else 'directory'}")
    if not (Path(args.data) / f"{args.subset}.en-de.en.bin").exists() and not list(Path(args.data).glob(
            f"{args.subset}.*.bin")):
        raise SystemExit(f"deploy_speed: error: --data {args.data} has no binarized subset {args.subset!r}")
    if not os.access(GNU_TIME, os.X_OK):
        raise SystemExit(f"deploy_speed: error: {GNU_TIME} (GNU time, for the peak RSS) is missing: apt-get install time")
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        if any(r.startswith("ct2") for r in args.rows):
            raise SystemExit("deploy_speed: error: ctranslate2 is not installed (pip install -e '.[deploy]'), "
                             "or give --rows plugin,exported")
    result = run(args)
    out = Path(args.out or Path(args.work) / "deploy_speed.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    log(f"wrote {out} and {out.with_suffix('.md')}")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
