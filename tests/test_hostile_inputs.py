"""Issue 27, "Tracebacks and silence": bad options and files a user can give, each through the real command line.

Every refusal is one ``<tool>: error:`` line naming the option or file, without a traceback, before any training
(no checkpoint written, an existing one left as it was); a request the tool cannot honour in full is said on stderr.
"""
import pytest

from helpers import TINY_TRAIN, USER_DIR, run_cli
from helpers import assert_one_error_line as _one_error_line


def _train(data, save_dir, *extra, arch="transformer", optimizer="adam"):
    args = list(TINY_TRAIN)
    args[args.index("--arch") + 1] = arch
    args[args.index("--optimizer") + 1] = optimizer
    return run_cli("fairseq-train", data, "--user-dir", USER_DIR, *args, "--max-tokens", "800", "--save-dir",
                   save_dir, "--no-epoch-checkpoints", *extra, check=False)


# ---- --optimizer radam: its options are checked when fairseq-train builds the optimizer, before the first update --
@pytest.mark.parametrize("option, needles", [
    ("--adam-betas=(0.9,)", ["--adam-betas '(0.9,)'", "two numbers in [0, 1)"]),  # was IndexError
    ("--adam-betas=banana", ["--adam-betas 'banana'", "two numbers"]),  # was ast's "malformed node"
    ("--adam-betas=(nan, 0.98)", ["--adam-betas '(nan, 0.98)'", "two numbers"]),
    ("--adam-betas=(1.5, 0.98)", ["beta1 = 1.5 is outside [0, 1)"]),  # was torch's ValueError traceback
    ("--adam-betas=(0.9, 1.0)", ["beta2 = 1.0 is outside [0, 1)"]),
    ("--adam-betas=(0.9, 1e999)", ["beta2 = inf is outside [0, 1)"]),
    ("--adam-eps=-1e-8", ["--adam-eps must be a finite number >= 0", "-1e-08"]),
    ("--weight-decay=-0.1", ["--weight-decay must be a finite number >= 0", "-0.1"]),
])
def test_radam_bad_option_is_one_line_before_training(synthetic_data, tmp_path, option, needles):
    proc = _train(synthetic_data, tmp_path / "ckpt", option, "--max-update", "2", optimizer="radam")
    line = _one_error_line(proc, *needles)
    assert line.startswith("fairseq-train: error:")
    assert not (tmp_path / "ckpt" / "checkpoint_last.pt").exists()  # nothing trained


# ---- an Admin profile whose ω would overflow the first forward ---------------------------------------------------
def test_profile_with_huge_omega_is_refused_at_start_up(synthetic_data, tmp_path):
    """ω = 3e38 is a finite float32, but x·ω overflows: today the first forward dies with a bare StopIteration."""
    profile = tmp_path / "profile.ratio.init"
    profile.write_text("1 1.0\n2 3e38\n1 1.0\n2 1.0\n3 1.0\n")
    proc = _train(synthetic_data, tmp_path / "ckpt", "--encoder-layers", "1", "--decoder-layers", "1",
                  "--admin-profile-load", profile, "--max-update", "2", arch="admin_transformer")
    _one_error_line(proc, str(profile), "line 2", "3e38", "1000")
    assert not (tmp_path / "ckpt" / "checkpoint_last.pt").exists()


def test_profile_omega_bound_is_inclusive(tmp_path):
    from fairseq_admin.errors import OptionError
    from fairseq_admin.profiling import OMEGA_MAX, read_profile

    path = tmp_path / "profile.ratio.init"
    path.write_text(f"1 1.0\n2 {OMEGA_MAX!r}\n1 1.0\n2 1.0\n3 1.0\n")
    assert read_profile(str(path), 2, 3)[0] == [1.0, OMEGA_MAX]
    path.write_text("1 1.0\n2 1000.001\n1 1.0\n2 1.0\n3 1.0\n")
    with pytest.raises(OptionError, match="line 2"):
        read_profile(str(path), 2, 3)


# ---- resuming with another --admin-omega ------------------------------------------------------------------------
@pytest.mark.parametrize("first, then", [(["--admin-omega", "scalar"], []), ([], ["--admin-omega", "scalar"])])
def test_resume_with_another_admin_omega_is_refused_and_keeps_the_checkpoint(synthetic_data, tmp_path, first, then):
    """Today: fairseq's "Cannot load model parameters" traceback (a scalar ω buffer against a per-dimension ω)."""
    save = tmp_path / "ckpt"
    assert _train(synthetic_data, save, *first, "--max-update", "2", arch="admin_transformer").returncode == 0
    last = save / "checkpoint_last.pt"
    before = last.read_bytes()
    proc = _train(synthetic_data, save, *then, "--max-update", "4", arch="admin_transformer")
    theirs, ours = ("scalar", "vector") if first else ("vector", "scalar")
    _one_error_line(proc, str(last), f"admin_omega {theirs} vs {ours}")
    assert last.read_bytes() == before
    # the same option as the checkpoint resumes
    assert _train(synthetic_data, save, *first, "--max-update", "4", arch="admin_transformer").returncode == 0


# ---- fairseq-admin-prepare spm-train: a vocabulary smaller than asked is said ------------------------------------
def test_spm_train_says_when_the_vocabulary_is_smaller_than_asked(tmp_path):
    import sentencepiece as spm

    text = tmp_path / "train.txt"
    text.write_text("".join(f"w{i % 40} w{(7 * i) % 40} x{i % 13}\n" for i in range(300)))
    proc = run_cli("fairseq-admin-prepare", "spm-train", "--input", text, "--model-prefix", tmp_path / "spm",
                   "--vocab-size", "100000")
    got = spm.SentencePieceProcessor(model_file=str(tmp_path / "spm.model")).get_piece_size()
    assert got < 100000
    lines = [line for line in proc.stderr.splitlines() if "--vocab-size" in line]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fairseq-admin-prepare: warning:") and "100000" in lines[0] and f"got {got}" in lines[0]
    # a vocabulary of the size asked is not warned about
    proc = run_cli("fairseq-admin-prepare", "spm-train", "--input", text, "--model-prefix", tmp_path / "spm2",
                   "--vocab-size", str(got))
    assert "warning" not in proc.stderr, proc.stderr
