"""Safe (weights-only) loading of real fairseq checkpoints: the allow-list, fairseq-generate/-train through
``--user-dir fairseq_admin``, and refusal of a checkpoint whose pickle would run ``os.system``."""
import json
import subprocess
import sys

import pytest

from helpers import TINY_TRAIN, USER_DIR, evil_checkpoint, run_cli

from fairseq_admin import checkpoint_safety

EXPECTED_ALLOW_LIST = [
    "argparse.Namespace",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.dtypes.Int64DType",
    "numpy.dtypes.Float64DType",
]


@pytest.fixture(scope="module")
def trained(synthetic_data, tmp_path_factory):
    """fairseq-train (real CLI) with epoch, update and best/last checkpoints and --eval-bleu (numpy in metrics)."""
    save = tmp_path_factory.mktemp("safety_ckpt")
    run_cli("fairseq-train", synthetic_data, *TINY_TRAIN, "--max-tokens", "800", "--max-epoch", "2",
            "--save-interval-updates", "3", "--save-dir", save, "--eval-bleu", "--eval-bleu-detok", "space",
            "--eval-bleu-args", '{"beam": 1, "max_len_a": 0, "max_len_b": 12}')
    return {"data": synthetic_data, "save": save}


def test_allow_list_is_exactly_what_fairseq_checkpoints_need():
    assert checkpoint_safety.allowed_global_names() == EXPECTED_ALLOW_LIST


def test_real_checkpoints_need_only_allow_listed_globals(trained):
    names = sorted(p.name for p in trained["save"].glob("*.pt"))
    assert {"checkpoint1.pt", "checkpoint2.pt", "checkpoint_best.pt", "checkpoint_last.pt"} <= set(names)
    assert any(n.startswith("checkpoint_1_") for n in names), names  # --save-interval-updates
    # in a fresh interpreter: this one has the allow-list registered, which get_unsafe_globals_in_checkpoint omits
    code = ("import json, sys, torch\n"
            "print(json.dumps({p: torch.serialization.get_unsafe_globals_in_checkpoint(p) for p in sys.argv[1:]}))")
    paths = [str(p) for p in trained["save"].glob("*.pt")]
    proc = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    needed = set()
    for path, found in json.loads(proc.stdout.strip().splitlines()[-1]).items():
        assert set(found) <= set(EXPECTED_ALLOW_LIST), (path, found)
        needed |= set(found)
    for path in paths:
        state = checkpoint_safety.load_checkpoint(str(path))
        assert isinstance(state["cfg"]["model"], __import__("argparse").Namespace)
        assert state["model"]
    # Namespace always, numpy from --eval-bleu's metrics
    assert {"argparse.Namespace", "numpy.ndarray", "numpy.dtype"} <= needed


def test_plain_torch_load_refuses_fairseq_checkpoints_without_the_allow_list(trained):
    """Why install() exists: torch's default weights-only loader rejects a fresh fairseq checkpoint."""
    code = ("import sys, torch, pickle\n"
            "try:\n    torch.load(sys.argv[1])\nexcept pickle.UnpicklingError as e:\n    print(e); sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(trained["save"] / "checkpoint_last.pt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "argparse.Namespace" in proc.stdout


def test_install_is_idempotent_and_wraps_fairseq_loader():
    from fairseq import checkpoint_utils

    checkpoint_safety.install()
    first = checkpoint_utils.load_checkpoint_to_cpu
    checkpoint_safety.install()
    assert checkpoint_utils.load_checkpoint_to_cpu is first
    assert not getattr(first.__wrapped__, "_fairseq_admin_safe", False)
    assert checkpoint_safety.is_installed()


def test_fairseq_generate_reads_fresh_checkpoint_with_user_dir(trained):
    proc = run_cli("fairseq-generate", trained["data"], "--path", trained["save"] / "checkpoint_last.pt",
                   "--user-dir", USER_DIR, "--gen-subset", "test", "--beam", "2", "--max-tokens", "1000",
                   "--required-batch-size-multiple", "1", "--cpu", "--max-len-a", "0", "--max-len-b", "12")
    hyps = [line for line in proc.stdout.splitlines() if line.startswith("H-")]
    assert len(hyps) == 30


def test_fairseq_train_resumes_from_checkpoint_with_user_dir(trained, tmp_path):
    """--restore-file also goes through fairseq's load_checkpoint_to_cpu."""
    save = tmp_path / "resume"
    save.mkdir()
    proc = run_cli("fairseq-train", trained["data"], *TINY_TRAIN, "--user-dir", USER_DIR, "--max-tokens", "800",
                   "--max-epoch", "3", "--save-dir", save, "--restore-file",
                   trained["save"] / "checkpoint_last.pt", "--no-epoch-checkpoints")
    log = proc.stdout + proc.stderr
    assert "Loaded checkpoint" in log and "epoch 003" in log, log[-2000:]


def test_fairseq_generate_refuses_checkpoint_with_unsafe_global(trained, tmp_path):
    marker = tmp_path / "PWNED"
    evil = evil_checkpoint(trained["save"] / "checkpoint_last.pt", tmp_path / "evil.pt", marker)
    proc = run_cli("fairseq-generate", trained["data"], "--path", evil, "--user-dir", USER_DIR,
                   "--gen-subset", "test", "--beam", "1", "--max-tokens", "1000", "--cpu", check=False)
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0
    last = err.strip().splitlines()[-1]
    assert last.startswith("fairseq-generate: error: refused to load checkpoint") and "posix.system" in last, last
    assert "Traceback" not in err  # one line, not a traceback
    assert not marker.exists()
    assert not any(line.startswith("H-") for line in proc.stdout.splitlines())


def test_load_checkpoint_errors(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        checkpoint_safety.load_checkpoint(str(tmp_path / "missing.pt"))

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(RuntimeError, match="corrupt.pt"):
        checkpoint_safety.load_checkpoint(str(corrupt))

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((trained["save"] / "checkpoint_last.pt").read_bytes()[:5000])
    with pytest.raises(RuntimeError, match="truncated.pt"):
        checkpoint_safety.load_checkpoint(str(truncated))

    marker = tmp_path / "PWNED"
    evil = evil_checkpoint(trained["save"] / "checkpoint1.pt", tmp_path / "evil.pt", marker)
    with pytest.raises(checkpoint_safety.UnsafeCheckpointError) as info:
        checkpoint_safety.load_checkpoint(str(evil))
    assert info.value.globals == ["posix.system"]
    assert "evil.pt" in str(info.value) and "refused" in str(info.value)
    assert "weights_only" not in str(info.value)  # no advice to switch the safety off
    assert not marker.exists()


def test_fairseq_loader_in_process_names_the_global(trained, tmp_path):
    from fairseq import checkpoint_utils

    checkpoint_safety.install()
    state = checkpoint_utils.load_checkpoint_to_cpu(str(trained["save"] / "checkpoint_best.pt"))
    assert state["cfg"].model.arch == "transformer"
    marker = tmp_path / "PWNED"
    evil = evil_checkpoint(trained["save"] / "checkpoint_best.pt", tmp_path / "evil.pt", marker)
    with pytest.raises(RuntimeError, match=r"posix\.system"):
        checkpoint_utils.load_checkpoint_to_cpu(str(evil))
    assert not marker.exists()


def test_allow_list_is_objects_as_torch_2_4_and_2_5_read_it():
    """torch 2.4/2.5 (the floor of setup.py) key the allow-list by ``f"{f.__module__}.{f.__name__}"`` of each entry
    (torch/_weights_only_unpickler.py, ``_get_user_allowed_globals`` at v2.4.0 and v2.5.0, copied below); an
    ``(object, name)`` pair, which only torch >= 2.6 understands, fails there with "'tuple' object has no attribute
    '__module__'"."""
    def torch_2_4_user_allowed_globals(marked):
        rc = {}
        for f in marked:
            module, name = f.__module__, f.__name__
            rc[f"{module}.{name}"] = f
        return rc

    assert list(torch_2_4_user_allowed_globals(checkpoint_safety.safe_globals())) == EXPECTED_ALLOW_LIST


def test_allow_list_needs_neither_numpy_core_attribute_nor_dtypes(monkeypatch):
    """numpy 1.26 has a ``numpy._core`` without ``multiarray`` until that is imported, and numpy 1.24 no
    ``numpy.dtypes``: the allow-list must not read either (the plugin died at import on both)."""
    import types

    import numpy as np

    monkeypatch.setattr(np, "_core", types.ModuleType("numpy._core"), raising=False)
    assert checkpoint_safety.allowed_global_names() == EXPECTED_ALLOW_LIST
    monkeypatch.setattr(np, "dtypes", None)  # as absent (deleting it makes numpy's lazy __getattr__ recurse)
    assert checkpoint_safety.allowed_global_names() == EXPECTED_ALLOW_LIST  # the classes come from np.dtype itself


def test_array_pickled_under_the_other_numpy_major_loads(tmp_path):
    """A checkpoint whose arrays name ``_reconstruct`` as the other numpy major does (``numpy.core.multiarray`` under
    numpy 2, ``numpy._core.multiarray`` under 1.x) loads through the alias, with its values."""
    import zipfile

    import numpy as np
    import torch

    here = np.zeros(0).__reduce__()[0].__module__.encode()  # numpy.core.multiarray or numpy._core.multiarray
    other = b"numpy.core.multiarray" if here == b"numpy._core.multiarray" else b"numpy._core.multiarray"
    written = tmp_path / "here.pt"
    torch.save({"metrics": {"_bleu_counts": np.array([3, 2, 1, 0])}}, written)
    moved = tmp_path / "other.pt"
    with zipfile.ZipFile(written) as src, zipfile.ZipFile(moved, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data.pkl"):
                assert here + b"\n_reconstruct" in data
                data = data.replace(here + b"\n_reconstruct", other + b"\n_reconstruct")
            dst.writestr(item, data)
    state = checkpoint_safety.load_checkpoint(str(moved))
    assert state["metrics"]["_bleu_counts"].tolist() == [3, 2, 1, 0]
