"""The real command line, as a user runs it: fairseq-train -> fairseq-generate / fairseq-interactive / hub, resume,
and the start-up errors. Every scheme trains under fairseq's own ``--task translation`` (Admin's model profiles ω
itself at its first training batch)."""
import os
import re
import signal
import subprocess
import time

import pytest
import torch

from helpers import USER_DIR, VENV_BIN, run_cli

SCHEMES = ["postln", "preln", "admin", "b2t", "deepnorm"]
TINY_MODEL = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "32", "--decoder-embed-dim",
              "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads",
              "2", "--decoder-attention-heads", "2"]


def train_args(data, save_dir, arch, *extra, max_update=8):
    return ["fairseq-train", data, "--user-dir", USER_DIR, "--task", "translation", "--arch", arch,
            *TINY_MODEL, "--share-all-embeddings", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)",
            "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4", "--warmup-init-lr", "1e-7",
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--dropout", "0.1",
            "--max-tokens", "1000", "--max-update", str(max_update), "--save-dir", save_dir, "--cpu",
            "--num-workers", "0", "--seed", "1", "--log-format", "simple", "--log-interval", "1",
            "--no-epoch-checkpoints", *extra]


def generate(data, checkpoint, *extra, **kwargs):
    # fairseq main drops the last batch when its size is not a multiple of --required-batch-size-multiple
    # (default 8; fairseq/data/data_utils.py batch_by_size): 1 keeps every test sentence.
    return run_cli("fairseq-generate", data, "--user-dir", USER_DIR, "--path", checkpoint, "--beam", "4",
                   "--lenpen", "0.6", "--batch-size", "16", "--required-batch-size-multiple", "1", "--cpu",
                   "--num-workers", "0", *extra, **kwargs)


def load_checkpoint(path):
    """Through fairseq's own loader, i.e. torch's weights_only loader with our allow-list."""
    from fairseq import checkpoint_utils

    return checkpoint_utils.load_checkpoint_to_cpu(str(path))


def omegas(state):
    return {k: v for k, v in state["model"].items() if k.endswith("residual.omega")}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_train_then_generate_synthetic(scheme, synthetic_data, tmp_path):
    log = run_cli(*train_args(synthetic_data, tmp_path, f"{scheme}_transformer"))
    assert "done training" in log.stdout + log.stderr
    if scheme == "admin":
        assert "admin: profiled ω on the first batch" in log.stdout + log.stderr
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 8
    assert state["cfg"]["model"].residual_scheme == scheme
    if scheme == "admin":
        assert bool(state["model"]["omega_ready"])
        assert any(not torch.all(v == 1) for v in omegas(state).values())
    out = generate(synthetic_data, tmp_path / "checkpoint_last.pt").stdout
    hypotheses = [line for line in out.splitlines() if line.startswith("H-")]
    assert len(hypotheses) == 30
    assert re.search(r"BLEU4? = [\d.]+", out)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_train_then_generate_multi30k(scheme, multi30k_data, tmp_path):
    data = multi30k_data["bin"]
    run_cli(*train_args(data, tmp_path, f"{scheme}_transformer", "--max-tokens", "2000", max_update=6))
    out = generate(data, tmp_path / "checkpoint_last.pt", "--remove-bpe", "sentencepiece").stdout
    hypotheses = [line for line in out.splitlines() if line.startswith("H-")]
    assert len(hypotheses) == multi30k_data["test_size"]
    assert "▁" not in "".join(hypotheses)  # sentencepiece pieces were joined back into words


def test_generation_needs_no_profile_file_and_interactive_and_hub_work(synthetic_data, tmp_path):
    save = tmp_path / "ckpt"
    profile = tmp_path / "profile.ratio.init"
    run_cli(*train_args(synthetic_data, save, "admin_transformer", "--admin-profile-save", profile))
    assert profile.exists()
    profile.unlink()  # generation must not look for it
    work = tmp_path / "elsewhere"
    work.mkdir()
    generate(synthetic_data, save / "checkpoint_last.pt", cwd=work)
    proc = run_cli("fairseq-interactive", synthetic_data, "--user-dir", USER_DIR, "--path", save / "checkpoint_last.pt",
                   "--source-lang", "src", "--target-lang", "tgt", "--beam", "2", "--cpu", input="w1 w2 w3\nw4 w5\n",
                   cwd=work)
    assert len([l for l in proc.stdout.splitlines() if l.startswith("H-")]) == 2
    from fairseq_admin.models import ResidualTransformerModel

    hub = ResidualTransformerModel.from_pretrained(str(save), checkpoint_file="checkpoint_last.pt",
                                                   data_name_or_path=str(synthetic_data))
    translation = hub.translate("w1 w2 w3", beam=2)
    assert isinstance(translation, str) and translation.strip()


def _update_count(path):
    return load_checkpoint(path)["optimizer_history"][-1]["num_updates"]


def test_kill_and_resume_keeps_omega_and_continues(synthetic_data, tmp_path):
    """A run killed after a checkpoint restarts from it: ω comes from the checkpoint, nothing is re-profiled."""
    args = train_args(synthetic_data, tmp_path, "admin_transformer", "--admin-omega", "scalar",
                      "--save-interval-updates", "3", max_update=10_000)
    cmd = [str(VENV_BIN / args[0]), *map(str, args[1:])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = tmp_path / "checkpoint_last.pt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # let the checkpoint file be renamed into place
    proc.send_signal(signal.SIGKILL)
    first_log = proc.communicate()[0]
    assert "admin: profiled ω" in first_log
    killed = load_checkpoint(last)
    done = killed["optimizer_history"][-1]["num_updates"]
    assert done >= 3 and bool(killed["model"]["omega_ready"])
    log = run_cli(*train_args(synthetic_data, tmp_path, "admin_transformer", "--admin-omega", "scalar",
                              "--save-interval-updates", "3", max_update=done + 4))
    text = log.stdout + log.stderr
    assert "admin: profiled" not in text and "Loaded checkpoint" in text
    resumed = load_checkpoint(last)
    assert resumed["optimizer_history"][-1]["num_updates"] == done + 4
    before, after = omegas(killed), omegas(resumed)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def _start_up_error(synthetic_data, tmp_path, arch, *extra, task="translation"):
    args = train_args(synthetic_data, tmp_path, arch, *extra)
    args[args.index("--task") + 1] = task
    proc = run_cli(*args, check=False)
    assert proc.returncode != 0
    assert not (tmp_path / "checkpoint_last.pt").exists()  # nothing trained
    return proc.stdout + proc.stderr


def test_admin_with_pre_ln_is_refused(synthetic_data, tmp_path):
    err = _start_up_error(synthetic_data, tmp_path, "admin_transformer", "--encoder-normalize-before")
    assert "admin is defined for Post-LN only" in err


@pytest.mark.parametrize("task", ["translation", "admin_translation"])
def test_admin_profiles_at_its_first_batch_under_any_task(synthetic_data, tmp_path, task):
    args = train_args(synthetic_data, tmp_path, "admin_transformer", "--admin-profile-save",
                      tmp_path / "profile.ratio.init", max_update=2)
    args[args.index("--task") + 1] = task
    log = run_cli(*args)
    assert log.stderr.count("admin: profiled ω on the first batch") + log.stdout.count("admin: profiled ω") == 1
    assert bool(load_checkpoint(tmp_path / "checkpoint_last.pt")["model"]["omega_ready"])
    resumed = run_cli(*train_args(synthetic_data, tmp_path, "admin_transformer", "--admin-profile-save",
                                  tmp_path / "profile.ratio.init", max_update=4))
    assert "admin: profiled" not in resumed.stdout + resumed.stderr  # resume never profiles again


def test_profile_file_of_another_depth_is_refused(synthetic_data, tmp_path):
    profile = tmp_path / "profile.ratio.init"
    profile.write_text("".join(f"{i} 1.5\n" for i in range(1, 7)) + "".join(f"{i} 1.5\n" for i in range(1, 10)))
    err = _start_up_error(synthetic_data, tmp_path, "admin_transformer", "--admin-profile-load", profile)
    assert "has 15 lines, but this model needs 10" in err


def test_profile_load_sets_omega_from_file(synthetic_data, tmp_path):
    profile = tmp_path / "profile.ratio.init"
    values = [1.0, 1.5, 1.75, 2.0, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25]
    profile.write_text("".join(f"{i} {v}\n" for i, v in enumerate(values[:4], 1)) +
                       "".join(f"{i} {v}\n" for i, v in enumerate(values[4:], 1)))
    log = run_cli(*train_args(synthetic_data, tmp_path, "admin_transformer", "--admin-omega", "scalar",
                              "--admin-profile-load", profile, max_update=2))
    assert "admin: profiled" not in log.stdout + log.stderr
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")["model"]
    got = [state[f"encoder.layers.{l}.residual.omega"][i].item() for l in range(2) for i in range(2)] + \
          [state[f"decoder.layers.{l}.residual.omega"][i].item() for l in range(2) for i in range(3)]
    assert got == values


@pytest.mark.parametrize("extra, message", [
    (["--residual-scheme", "deepish"], "invalid choice: 'deepish'"),
    (["--admin-init", "O(n^2)"], "invalid choice: 'O(n^2)'"),
    (["--admin-ffn-init", "kaiming"], "invalid choice: 'kaiming'"),
    (["--b2t-ffn-init", "kaiming"], "invalid choice: 'kaiming'"),
    (["--residual-scheme", "b2t"], "sets --residual-scheme admin, but --residual-scheme b2t was given"),
    (["--encoder-layerdrop", "0.1"], "cannot run with --encoder-layerdrop"),
])
def test_bad_options_are_refused_at_start_up(synthetic_data, tmp_path, extra, message):
    assert message in _start_up_error(synthetic_data, tmp_path, "admin_transformer", *extra)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fairseq_train_distributed_two_cpu_workers(synthetic_data, tmp_path):
    """fairseq-train's real distributed path, on the CPU: two gloo workers started by hand (fairseq's own launcher
    assumes CUDA), each with its own batches; profiling pools their statistics and checks both hold the same ω."""
    init = f"tcp://127.0.0.1:{_free_port()}"
    procs = []
    for rank in range(2):
        args = train_args(synthetic_data, tmp_path, "admin_transformer", "--distributed-world-size", "2",
                          "--distributed-rank", str(rank), "--distributed-init-method", init,
                          "--distributed-no-spawn", "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp",
                          "--device-id", "0", "--admin-profile-save", tmp_path / "profile.ratio.init", max_update=3)
        cmd = [str(VENV_BIN / args[0]), *map(str, args[1:])]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "identical on all 2 workers" in logs[0]
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 3 and bool(state["model"]["omega_ready"])
    assert (tmp_path / "profile.ratio.init").read_text().count("\n") == 2 * 2 + 3 * 2
