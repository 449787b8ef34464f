"""Issue 27, data loss: no writer overwrites an input or a resumable checkpoint, and every bad output path is one
line before any work (fairseq_admin/output_safety.py). Each test's body is the reproduction, through the real
command (console script or shell script), and each failed on the code before the fix."""
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import ROOT, TINY_TRAIN, USER_DIR, VENV_BIN, run_cli
from helpers import assert_one_error_line as _refused


def _run(cmd, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, env=env, **kwargs)


def _snapshot(directory):
    return {p.name: p.read_bytes() for p in Path(directory).iterdir() if p.is_file()}


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture(scope="module")
def en_de(tmp_path_factory):
    """A toy En-De task (German = English reversed), its sentencepiece model and raw test reference, binarized by
    fairseq-preprocess, and a postln_transformer (the plugin's model) trained one epoch by fairseq-train."""
    import sentencepiece as spm

    rng = random.Random(0)
    raw = tmp_path_factory.mktemp("writers_raw")
    words = [f"w{i}" for i in range(20)]
    for split, n in (("train", 300), ("valid", 20), ("test", 12)):
        en = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) for _ in range(n)]
        _write(raw / f"{split}.en", en)
        _write(raw / f"{split}.de", [" ".join(reversed(s.split())) for s in en])
    spm.SentencePieceTrainer.train(input=f"{raw / 'train.en'},{raw / 'train.de'}", model_prefix=str(raw / "spm"),
                                   vocab_size=40, model_type="word", hard_vocab_limit=False, num_threads=1,
                                   minloglevel=2)
    data = tmp_path_factory.mktemp("writers_bin")
    run_cli("fairseq-preprocess", "--source-lang", "en", "--target-lang", "de", "--trainpref", raw / "train",
            "--validpref", raw / "valid", "--testpref", raw / "test", "--destdir", data, "--joined-dictionary",
            "--workers", "1")
    save = tmp_path_factory.mktemp("writers_save")
    args = list(TINY_TRAIN)
    args[args.index("--arch") + 1] = "postln_transformer"
    run_cli("fairseq-train", data, *args, "--user-dir", USER_DIR, "--max-tokens", "800", "--max-epoch", "1",
            "--save-dir", save)
    assert (save / "checkpoint_last.pt").is_file() and (save / "checkpoint_best.pt").is_file()
    return {"data": data, "save": save, "spm": raw / "spm.model", "ref": raw / "test.de"}


@pytest.fixture
def save_dir(en_de, tmp_path):
    """A copy of the trained save directory, to be attacked."""
    save = tmp_path / "save"
    shutil.copytree(en_de["save"], save)
    return save


@pytest.fixture
def unwritable_dir(tmp_path):
    """A directory in which creating a file fails for this user, root included (for root a chmod 0555 directory is
    writable, and os.access says yes to both it and an immutable one): chmod 0555 for a user, ``chattr +i`` for
    root, else /proc. The fixture checks that creating a file there really fails."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    immutable = False
    if os.geteuid() != 0:
        directory.chmod(0o555)
    elif shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode == 0
    candidates = [directory, Path("/proc")]
    chosen = None
    for candidate in candidates:
        try:
            fd, probe = tempfile.mkstemp(dir=candidate)
        except OSError:
            chosen = candidate
            break
        os.close(fd)
        os.remove(probe)
    if chosen is None:
        pytest.skip("no directory found in which creating a file fails for this user")
    yield chosen
    if immutable:
        subprocess.run(["chattr", "-i", str(directory)], check=True)
    directory.chmod(0o755)


# ---- fairseq-admin-export --out ------------------------------------------------------------------------------------
def test_export_through_a_symlinked_directory_onto_its_own_input_is_refused(save_dir, en_de, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    model = work / "plugin.pt"
    shutil.copy(save_dir / "checkpoint_best.pt", model)
    before = model.read_bytes()
    (tmp_path / "link").symlink_to(work, target_is_directory=True)
    proc = _run([VENV_BIN / "fairseq-admin-export", "--checkpoint", model, "--out", tmp_path / "link" / "plugin.pt",
                 "--data", en_de["data"]])
    _refused(proc, "--out", "is one of the inputs")
    assert model.read_bytes() == before and os.listdir(work) == ["plugin.pt"]


def test_export_onto_checkpoint_last_of_a_save_dir_is_refused(save_dir, en_de):
    before = _snapshot(save_dir)
    proc = _run([VENV_BIN / "fairseq-admin-export", "--checkpoint", save_dir / "checkpoint_best.pt",
                 "--out", save_dir / "checkpoint_last.pt", "--data", en_de["data"]])
    _refused(proc, "checkpoint_last.pt", "resumes")
    assert _snapshot(save_dir) == before


def test_export_out_directory_is_one_line(save_dir, en_de, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    proc = _run([VENV_BIN / "fairseq-admin-export", "--checkpoint", save_dir / "checkpoint_best.pt", "--out", out,
                 "--data", en_de["data"]])
    _refused(proc, "--out", "is a directory")
    assert list(out.iterdir()) == []


def test_export_creates_missing_directories(save_dir, en_de, tmp_path):
    """The README's deployment example, `--out export/model.pt` on a fresh tree."""
    out = tmp_path / "export" / "deploy" / "model.pt"
    proc = _run([VENV_BIN / "fairseq-admin-export", "--checkpoint", save_dir / "checkpoint_best.pt", "--out", out,
                 "--data", en_de["data"]])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert out.is_file() and os.listdir(out.parent) == ["model.pt"]


# ---- fairseq-admin-evaluate --out -----------------------------------------------------------------------------------
def test_evaluate_out_naming_its_checkpoint_is_refused(save_dir, en_de):
    before = _snapshot(save_dir)
    proc = _run([VENV_BIN / "fairseq-admin-evaluate", "--pair", "en-de", "--checkpoints", save_dir,
                 "--data", en_de["data"], "--spm", en_de["spm"], "--ref", en_de["ref"], "--num-checkpoints", "1",
                 "--cpu", "--out", save_dir / "checkpoint_best.pt"])
    _refused(proc, "--out", "checkpoint_best.pt", "is one of the inputs")
    assert "step 1/4" not in proc.stdout  # before any work
    assert _snapshot(save_dir) == before


# ---- fairseq-admin-prepare clean / spm-encode ------------------------------------------------------------------------
@pytest.fixture
def corpus(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _write(corpus / "train.en", ["a small dog", "the big cat", "one more line"])
    _write(corpus / "train.de", ["ein kleiner hund", "die grosse katze", "noch eine zeile"])
    return corpus


def test_prepare_clean_output_naming_an_input_is_refused(corpus):
    before = _snapshot(corpus)
    proc = _run([VENV_BIN / "fairseq-admin-prepare", "clean", "--pair", corpus / "train.en", corpus / "train.de",
                 "--src-out", corpus / "train.en", "--tgt-out", corpus / "clean.de"])
    _refused(proc, "--src-out", "is one of the inputs")
    assert _snapshot(corpus) == before


def test_prepare_spm_encode_output_naming_an_input_is_refused(corpus, tmp_path):
    """Run by path, as data-prep/lib.sh runs it (the module loads output_safety without importing the package)."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(input=str(corpus / "train.en"), model_prefix=str(tmp_path / "spm"),
                                   vocab_size=12, model_type="word", hard_vocab_limit=False, minloglevel=2)
    before = _snapshot(corpus)
    proc = _run([sys.executable, ROOT / "fairseq_admin" / "cli" / "prepare.py", "spm-encode", "--model",
                 tmp_path / "spm.model", "--inputs", corpus / "train.en", corpus / "train.de",
                 "--outputs", corpus / "train.en", corpus / "train.de"])
    _refused(proc, "--outputs", "is one of the inputs")
    assert _snapshot(corpus) == before


def test_prepare_failure_keeps_the_previous_outputs(corpus, tmp_path):
    """A clean that fails half-way (line counts differ) leaves the outputs of the last good run as they were."""
    out = tmp_path / "out"
    good = _run([VENV_BIN / "fairseq-admin-prepare", "clean", "--pair", corpus / "train.en", corpus / "train.de",
                 "--src-out", out / "clean.en", "--tgt-out", out / "clean.de"])
    assert good.returncode == 0, good.stderr
    before = _snapshot(out)
    _write(corpus / "short.de", ["ein kleiner hund"])
    proc = _run([VENV_BIN / "fairseq-admin-prepare", "clean", "--pair", corpus / "train.en", corpus / "short.de",
                 "--src-out", out / "clean.en", "--tgt-out", out / "clean.de"])
    _refused(proc, "line count mismatch")
    assert _snapshot(out) == before and sorted(os.listdir(out)) == ["clean.de", "clean.en"]


# ---- benchmarks/diagnose_wmt_en_de.sh ---------------------------------------------------------------------------------
def test_diagnose_script_with_a_bad_argument_keeps_the_committed_table(tmp_path):
    """Run on a copy of the script and of its results directory: the committed table is never at risk."""
    (tmp_path / "benchmarks" / "results" / "diagnostics").mkdir(parents=True)
    shutil.copy(ROOT / "benchmarks" / "diagnose_wmt_en_de.sh", tmp_path / "benchmarks")
    table = tmp_path / "benchmarks" / "results" / "diagnostics" / "table.txt"
    table.write_text("the committed table\n")
    proc = _run(["bash", tmp_path / "benchmarks" / "diagnose_wmt_en_de.sh", "--frobnicate"])
    assert proc.returncode != 0
    assert table.read_text() == "the committed table\n"
    assert "--frobnicate" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert os.listdir(table.parent) == ["table.txt"]  # no log hiding the error, no temporary file


# ---- an output directory in which nothing can be created, root included ---------------------------------------------
def test_unwritable_output_is_refused_before_the_work(save_dir, en_de, unwritable_dir):
    tools = {
        "fairseq-admin-export": ["--checkpoint", save_dir / "checkpoint_best.pt", "--out", unwritable_dir / "m.pt",
                                 "--data", en_de["data"]],
        "fairseq-admin-average": ["--inputs", save_dir / "checkpoint1.pt", save_dir / "checkpoint_best.pt",
                                  "--output", unwritable_dir / "avg.pt"],
        "fairseq-admin-evaluate": ["--pair", "en-de", "--checkpoints", save_dir, "--data", en_de["data"],
                                   "--spm", en_de["spm"], "--ref", en_de["ref"], "--num-checkpoints", "1", "--cpu",
                                   "--out", unwritable_dir / "results.json"],
    }
    for tool, argv in tools.items():
        proc = _run([VENV_BIN / tool, *argv])
        _refused(proc, unwritable_dir, "cannot create a file")
        assert "[average] averaging" not in proc.stdout and "step 1/4" not in proc.stdout, (tool, proc.stdout)


@pytest.mark.parametrize("out", ["data", "."])
def test_ct2_peri_ln_force_onto_a_directory_holding_an_input_is_refused(tmp_path, out):
    """``--force`` makes CTranslate2's converter delete ``--out`` whole: the data-bin itself, or the folder holding
    the checkpoint, would be lost."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dict.en.txt").write_text("w0 1\n")
    checkpoint = tmp_path / "checkpoint_best.pt"
    checkpoint.write_bytes(b"not a model")
    before = _snapshot(data), checkpoint.read_bytes()
    proc = _run([VENV_BIN / "python", "-m", "fairseq_admin.cli.ct2_peri_ln", "--checkpoint", checkpoint,
                 "--data", data, "--out", tmp_path / out, "--force"])
    _refused(proc, "holds the input")
    assert (_snapshot(data), checkpoint.read_bytes()) == before
