"""What the benchmark scripts share: the Multi30k data, the real fairseq objects they time, the alternating timer,
sacreBLEU scoring and the code version. No benchmark script imports another script (but choosing.py, which renders
depth_grid.py's results with its definitions); they all import this module.

* data: :func:`prepare_data` (``data-prep/prepare-multi30k.sh``, sentencepiece 8k, cached in WORK/data);
  :func:`fixed_batches` (fairseq's own batching) and :func:`gen_batches` (test_2016_flickr in corpus order).
* models: :func:`model_argv` / :func:`build` give fairseq's real ``Trainer`` of a scheme (``--arch
  <scheme>_transformer``, ``--task admin_translation``) or of fairseq's own ``--arch transformer`` (``vanilla``;
  ``vanilla-preln`` with ``--encoder/decoder-normalize-before``), which :func:`baseline_of` pairs with each scheme.
* timing: :func:`time_train` (``Trainer.train_step``), :func:`time_generate` (``SequenceGenerator`` through
  ``task.inference_step``), :func:`alternate` (V S V S ... S V, sandwich ratios) and :func:`summarize`.
* scoring: :func:`sacrebleu_of_pieces` (sentencepiece decoding, sacreBLEU 13a against the raw references).
"""
import collections
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(ROOT, "fairseq_admin")
DEFAULT_WORK = os.path.join(ROOT, "benchmarks", "work")
DEFAULT_RAW = os.path.join(os.path.dirname(ROOT), "shared", "data", "multi30k")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# cost.py's CPU setting: d=128, ffn 512, 4 heads, shared embeddings; Adam, label-smoothed CE, dropout 0.1.
DIMS = ["--encoder-embed-dim", "128", "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "512",
        "--decoder-ffn-embed-dim", "512", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
        "--share-all-embeddings"]
OPTIMIZATION = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "1e-4", "--lr-scheduler",
                "inverse_sqrt", "--warmup-updates", "4000", "--warmup-init-lr", "1e-7", "--criterion",
                "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--dropout", "0.1", "--seed", "1",
                "--num-workers", "0"]
TRAIN = OPTIMIZATION + ["--cpu"]


def make_log(name):
    """A print function that prefixes ``[name HH:MM:SSZ]`` and flushes."""
    def log(msg):
        print(f"[{name} {datetime.now(timezone.utc).strftime('%H:%M:%S')}Z] {msg}", flush=True)
    return log


def cpu_name():
    """The CPU's model name (/proc/cpuinfo), recorded beside every CPU measurement."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def code_version():
    """The commit and whether fairseq_admin/ had uncommitted changes when the measurement started."""
    def git(*a):
        r = subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "fairseq_admin_uncommitted": git("status", "--porcelain", "--", "fairseq_admin")}


# ---- data --------------------------------------------------------------------------------------------------------
def prepare_data(work, raw_dir, log=make_log("prepare_data")):
    """WORK/data: Multi30k En-De through data-prep/prepare-multi30k.sh (sentencepiece 8k) from ``raw_dir``, once."""
    data = os.path.join(work, "data")
    need = [os.path.join(data, "data-bin", "dict.en.txt"), os.path.join(data, "data-bin", "test.en-de.de.bin"),
            os.path.join(data, "spm.model"), os.path.join(data, "test.raw.de")]
    if not all(os.path.exists(p) for p in need):
        log(f"preparing Multi30k En-De in {data} (sentencepiece 8k) from {raw_dir}")
        env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        subprocess.run(["bash", os.path.join(ROOT, "data-prep", "prepare-multi30k.sh"), "--out", data,
                        "--raw-dir", raw_dir, "--vocab-size", "8000"], check=True, env=env)
    return data


# ---- building the real fairseq objects ------------------------------------------------------------------------------
def baseline_of(name):
    """The vanilla model a benchmarked model is compared with ('vanilla' itself: the A/A control)."""
    from fairseq_admin.schemes import SCHEMES
    return "vanilla-preln" if name in SCHEMES and SCHEMES[name].normalize_before else "vanilla"


def model_argv(name, layers, data_bin, max_tokens, scheme_args=(), dims=DIMS, train=TRAIN):
    """fairseq-train arguments of one benchmarked model: 'vanilla', 'vanilla-preln' or a scheme name; a scheme's
    are followed by ``scheme_args``, which vanilla models never get. ``dims`` and ``train``: the model's dimensions
    and the optimization/device options, identical for both models of a comparison."""
    enc, dec = layers.split("-")
    depth = ["--encoder-layers", enc, "--decoder-layers", dec]
    if name.startswith("vanilla"):
        extra = ["--encoder-normalize-before", "--decoder-normalize-before"] if name == "vanilla-preln" else []
        head = ["--task", "translation", "--arch", "transformer"] + extra
        scheme_args = ()
    else:
        head = ["--task", "admin_translation", "--arch", f"{name}_transformer"]
    return [data_bin, "--user-dir", USER_DIR, *head, *depth, *dims, *train, "--max-tokens", str(max_tokens),
            *scheme_args]


def build(name, layers, data_bin, max_tokens, scheme_args=(), dims=DIMS, train=TRAIN):
    """Task, model, criterion and fairseq's ``Trainer`` (which moves the model to CUDA unless ``--cpu`` and casts
    it under ``--fp16``/``--bf16``), as fairseq-train builds them."""
    import torch
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, model_argv(name, layers, data_bin, max_tokens, scheme_args, dims,
                                                          train))
    if getattr(args, "bf16", False):
        args.tpu = False  # fairseq's option post-processing: --bf16 implies --tpu (torch_xla); not a TPU here
    cfg = convert_namespace_to_omegaconf(args)
    torch.manual_seed(1)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion)
    return {"name": name, "task": task, "model": model, "trainer": trainer, "cfg": cfg,
            "params": sum(p.numel() for p in model.parameters()), "class": type(model).__name__}


def _data_task(data_bin):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    args = options.parse_args_and_arch(options.get_training_parser(),
                                       model_argv("vanilla", "1-1", data_bin, 100000))
    return tasks.setup_task(convert_namespace_to_omegaconf(args).task)


def fixed_batches(data_bin, n, max_tokens, split="train", shuffle=True):
    """The first n batches (all with n=None) of a seeded epoch of fairseq's own batching (max_tokens per batch,
    fairseq's count: the longer side of the pair times the sentences)."""
    task = _data_task(data_bin)
    task.load_dataset(split)
    itr = task.get_batch_iterator(dataset=task.dataset(split), max_tokens=max_tokens, seed=1,
                                  required_batch_size_multiple=1, num_workers=0).next_epoch_itr(shuffle=shuffle)
    return list(itr) if n is None else [b for _, b in zip(range(n), itr)]


def gen_batches(data_bin, sentences, batch_size):
    """Batches of the first ``sentences`` test_2016_flickr source sentences, in corpus order."""
    task = _data_task(data_bin)
    task.load_dataset("test")
    ds = task.dataset("test")
    ids = list(range(min(sentences, len(ds))))
    return [ds.collater([ds[i] for i in ids[k:k + batch_size]]) for k in range(0, len(ids), batch_size)]


# ---- timed units --------------------------------------------------------------------------------------------------
def synchronize():
    """Waits for queued CUDA work, so that a timer read afterwards includes it (nothing to wait for on the CPU)."""
    import torch
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_train(m, batches):
    """Wall and CPU seconds of one ``Trainer.train_step`` per batch. An out-of-memory error is raised (fairseq
    would otherwise skip the step and return None: a skipped step timed as a step)."""
    synchronize()
    t, c = time.perf_counter(), time.process_time()
    for b in batches:
        m["trainer"].train_step([b], raise_oom=True)
    synchronize()
    return time.perf_counter() - t, time.process_time() - c


def make_generator(m, gen_len):
    """Beam 4, lenpen 0.6, output length pinned to ``gen_len`` tokens (then EOS): an untrained model does exactly
    the decoding work of any other."""
    from fairseq.sequence_generator import SequenceGenerator
    return SequenceGenerator([m["model"]], m["task"].target_dictionary, beam_size=4, max_len_a=0,
                             max_len_b=gen_len, min_len=gen_len, len_penalty=0.6)


def to_model_device(m, batch):
    """A batch on the model's device (fairseq's Trainer moves training batches itself; generation does not)."""
    from fairseq import utils
    return utils.move_to_cuda(batch) if next(m["model"].parameters()).is_cuda else batch


def time_generate(m, gen, batches):
    m["model"].eval()
    batches = [to_model_device(m, b) for b in batches]
    synchronize()
    t, c = time.perf_counter(), time.process_time()
    for b in batches:
        m["task"].inference_step(gen, [m["model"]], b)
    synchronize()
    return time.perf_counter() - t, time.process_time() - c


def time_call(fn):
    synchronize()
    t, c = time.perf_counter(), time.process_time()
    fn()
    synchronize()
    return time.perf_counter() - t, time.process_time() - c


def alternate(run_v, run_s, rounds, warmup):
    """V S V S ... S V; per-round wall and CPU (process) times, and the sandwich ratios
    scheme / mean(neighbouring vanilla) of each. With one torch thread the CPU time is the time this process spent
    computing, which other processes' load disturbs far less than the wall time; both are reported."""
    tv, ts = [], []
    for _ in range(rounds):
        tv.append(run_v())
        ts.append(run_s())
    tv.append(run_v())
    out = {"warmup_rounds_dropped": warmup}
    for k, key in ((0, "wall"), (1, "cpu")):
        v, s = [x[k] for x in tv], [x[k] for x in ts]
        out[f"vanilla_{key}_s"] = [round(x, 4) for x in v]
        out[f"scheme_{key}_s"] = [round(x, 4) for x in s]
        out[f"{key}_time_ratios"] = [round(s[i] / ((v[i] + v[i + 1]) / 2), 4) for i in range(warmup, rounds)]
    # compatibility with the first result files: the headline ratios are the wall-clock ones
    out["vanilla_s"], out["scheme_s"], out["time_ratios"] = out["vanilla_wall_s"], out["scheme_wall_s"], \
        out["wall_time_ratios"]
    return out


def summarize(res, work_units, unit):
    """Throughput ratio scheme / vanilla = 1 / time ratio (median, min, max over the measured rounds), for the
    wall-clock and the CPU time; throughputs from the median wall time."""
    w = res["warmup_rounds_dropped"]
    for key, prefix in (("wall", ""), ("cpu", "cpu_")):
        thr = sorted(1 / r for r in res[f"{key}_time_ratios"])
        res.update({f"{prefix}throughput_ratio_median": round(statistics.median(thr), 4),
                    f"{prefix}throughput_ratio_min": round(thr[0], 4),
                    f"{prefix}throughput_ratio_max": round(thr[-1], 4)})
    v = statistics.median(res["vanilla_wall_s"][w:])
    s = statistics.median(res["scheme_wall_s"][w:])
    res.update({f"vanilla_{unit}_median": round(work_units / v, 1), f"scheme_{unit}_median": round(work_units / s, 1)})
    return res


# ---- scoring ----------------------------------------------------------------------------------------------------
def hypothesis_stats(hyps):
    """How many different outputs the model gave for its 1,000 different inputs. A model that ignores the source
    (a fluent target-side language model) can have a loss far below the unigram level and still emit the same few
    sentences for every input: BLEU alone does not say why it is low, this does."""
    counts = collections.Counter(hyps)
    return {"distinct_hypotheses": len(counts), "most_common_hypothesis_count": max(counts.values(), default=0)}


def sacrebleu_of_pieces(data, pieces_by_id, sentences=None):
    """sacreBLEU (13a) of hypotheses given as sentencepiece pieces (``{sentence id: "▁A ▁dog ..."}``, ids in
    test_2016_flickr order) against the raw references DATA/test.raw.de (the first ``sentences`` of them; all by
    default). Returns the detokenized hypotheses and the score fields."""
    import sacrebleu
    import sentencepiece as spm
    refs = open(os.path.join(data, "test.raw.de"), encoding="utf-8").read().rstrip("\n").split("\n")
    refs = refs[:sentences] if sentences else refs
    if len(pieces_by_id) != len(refs) or sorted(pieces_by_id) != list(range(len(refs))):
        raise RuntimeError(f"{len(pieces_by_id)} hypotheses for {len(refs)} references")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(data, "spm.model"))
    detok = [sp.decode_pieces(pieces_by_id[i].split()) for i in range(len(refs))]
    metric = sacrebleu.BLEU()
    bleu = metric.corpus_score(detok, [refs])
    return detok, {"bleu": round(bleu.score, 2), "bleu_str": str(bleu), "signature": str(metric.get_signature()),
                   "sentences": len(refs)}
