"""Small shared helpers for the tests: build a tiny model straight from fairseq's own argument parser."""
import os
import subprocess
import sys
from pathlib import Path

import torch

import fairseq_admin  # noqa: F401  (registers the model, architectures and task)
from fairseq import options
from fairseq.data import Dictionary
from fairseq_admin import checkpoint_safety

ROOT = Path(__file__).resolve().parents[1]
USER_DIR = str(ROOT / "fairseq_admin")
SHARED_DATA = ROOT.parent / "shared" / "data"
VENV_BIN = Path(sys.executable).parent

TINY = ["--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
        "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]

# fairseq's own `transformer` at toy size, for tests of the tooling (averaging, evaluation, safe loading)
TINY_TRAIN = ["--task", "translation", "--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
              "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
              "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
              "--share-all-embeddings", "--optimizer", "adam", "--lr", "0.005", "--lr-scheduler", "inverse_sqrt",
              "--warmup-updates", "5", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
              "--cpu", "--num-workers", "0", "--no-progress-bar", "--log-interval", "5", "--seed", "1"]


class FakeTask:
    """What build_model needs from a task: the dictionaries."""

    def __init__(self, size=40):
        self.source_dictionary = self.target_dictionary = Dictionary()
        for i in range(size):
            self.source_dictionary.add_symbol(f"w{i}")


def parse_args(arch, *extra, layers=(2, 2), task="admin_translation"):
    parser = options.get_training_parser()
    argv = ["/nonexistent-data", "--task", task, "--arch", arch, "--encoder-layers", str(layers[0]),
            "--decoder-layers", str(layers[1]), *TINY, *extra]
    return options.parse_args_and_arch(parser, argv)


def build_model(arch, *extra, layers=(2, 2), task=None):
    from fairseq_admin.models import ResidualTransformerModel

    args = parse_args(arch, *extra, layers=layers)
    return ResidualTransformerModel.build_model(args, task or FakeTask())


def run_cli(*argv, check=True, timeout=600, **kwargs):
    """Run one of fairseq's console scripts (fairseq-train, fairseq-generate, ...) from this environment."""
    cmd = [str(VENV_BIN / argv[0]), *map(str, argv[1:])]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def assert_one_error_line(proc, *needles):
    """The process failed (no crash: not 134/SIGABRT) with exactly one ``error:`` line holding every needle, and no
    traceback: the project's rule for every refusal. Returns that line."""
    out = proc.stdout + proc.stderr
    assert proc.returncode not in (0, 134, -6), (proc.returncode, out[-3000:])
    assert "Traceback" not in out and "terminate called" not in out, out[-3000:]
    lines = [line for line in out.splitlines() if "error:" in line]
    assert len(lines) == 1, out[-3000:]
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def random_batch(dictionary, bsz=3, src_len=7, tgt_len=5, seed=0):
    """Token batches with left-padded sources (fairseq's default) and some right-padded targets."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(dictionary.nspecial, len(dictionary), (bsz, src_len), generator=g)
    src[0, :2] = dictionary.pad()
    lengths = (src != dictionary.pad()).sum(1)
    prev = torch.randint(dictionary.nspecial, len(dictionary), (bsz, tgt_len), generator=g)
    prev[:, 0] = dictionary.eos()
    prev[1, -2:] = dictionary.pad()
    return {"src_tokens": src, "src_lengths": lengths, "prev_output_tokens": prev}


def evil_checkpoint(src, dst, marker):
    """A real fairseq checkpoint plus one object whose unpickling would call os.system('touch MARKER')."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = checkpoint_safety.load_checkpoint(src)
    state["extra_state"]["payload"] = Payload()
    torch.save(state, dst)
    # the pickle really names os.system (posix.system); scanning the opcodes executes nothing
    assert "posix.system" in torch.serialization.get_unsafe_globals_in_checkpoint(str(dst))
    assert not os.path.exists(marker)
    return dst
