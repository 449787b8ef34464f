"""The five schemes of 0.5.0 stay bit-identical: parameters, logits (full, incremental, train mode with its
gradients), Admin's profiled ω, and 0.5.0 checkpoints load and translate to the same hypotheses and scores.

The reference is tests/fixtures/v050.json, written by tests/fixtures/make_v050_fixture.py from the 0.5.0 tree
(commit 178b17c); the same script measures the current tree here. Equality is of SHA-256 digests of the tensors'
bytes, so one ulp anywhere fails. The bits also depend on torch and the CPU's instruction set: on another platform
the reference is recomputed from 0.5.0 (``git archive 178b17c``) on this machine, or the test is skipped.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import ROOT, USER_DIR

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_v050_fixture as v050  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "v050.json"


def _v050_tree(dest: Path) -> Path:
    """The 0.5.0 sources, from this repository's history (None when the history is not there)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", v050.V050_COMMIT, "fairseq_admin"],
                             capture_output=True)
    if archive.returncode != 0:
        return None
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return v050.make_data(tmp_path_factory.mktemp("v050_data"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The 0.5.0 records for this platform: the fixture, or recomputed from the 0.5.0 sources."""
    recorded = json.loads(FIXTURE.read_text())
    if recorded["platform"] == v050.platform():
        return recorded
    work = tmp_path_factory.mktemp("v050_reference")
    tree = _v050_tree(work / "tree")
    if tree is None:
        pytest.skip(f"the fixture was recorded on {recorded['platform']}, this is {v050.platform()}, and commit "
                    f"{v050.V050_COMMIT} is not in this clone to recompute it")
    out = work / "v050.json"
    proc = subprocess.run([sys.executable, str(Path(v050.__file__)), "--out", str(out), "--work", str(work)],
                          env=dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def _differences(expected: dict, got: dict, where: str = "") -> list:
    out = []
    for key in sorted(set(expected) | set(got)):
        a, b = expected.get(key), got.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{where}{key}.")
        elif a != b:
            out.append(f"{where}{key}: 0.5.0 {a!r}, now {b!r}")
    return out


@pytest.mark.parametrize("case", list(v050.MODEL_CASES))
def test_model_is_bit_identical_to_v050(case, reference, data):
    got = v050.model_records(data, [case])[case]
    differences = _differences(reference["models"][case], got)
    assert not differences, "\n".join(differences[:12])


@pytest.mark.parametrize("scheme", list(v050.CLI_CASES))
def test_v050_checkpoint_loads_and_translates_identically(scheme, reference, data, tmp_path):
    """fairseq-train with today's code writes the 0.5.0 tensors bit for bit; with 0.5.0's ``cfg["model"]`` (its
    options exactly, none of those added since) that checkpoint is a 0.5.0 checkpoint, and today's fairseq-generate
    translates it to the same hypotheses with the same scores."""
    from fairseq_admin import checkpoint_safety

    expected = reference["cli"][scheme]
    checkpoint = v050.train(data, tmp_path / "run", v050.CLI_CASES[scheme], USER_DIR)
    assert v050.state_digests(v050.load_state(checkpoint)["model"]) == expected["checkpoint_model"]
    state = checkpoint_safety.load_checkpoint(str(checkpoint))  # as written, not upgraded by fairseq's loader
    state["cfg"]["model"] = v050.model_cfg_from_text(expected["checkpoint_cfg_model"])
    old = tmp_path / "checkpoint_v050.pt"
    torch.save(state, old)
    assert v050.generate(data, old, USER_DIR) == expected["generate"]


def test_a_checkpoint_written_by_v050_itself(reference, data, tmp_path):
    """The same, with a checkpoint that the 0.5.0 code itself trains (its sources from this clone's history)."""
    tree = _v050_tree(tmp_path / "v050")
    if tree is None:
        pytest.skip(f"commit {v050.V050_COMMIT} is not in this clone")
    env = {"PYTHONPATH": str(tree)}
    checkpoint = v050.train(data, tmp_path / "run", "admin_transformer", str(tree / "fairseq_admin"), env=env)
    expected = reference["cli"]["admin"]
    assert v050.state_digests(v050.load_state(checkpoint)["model"]) == expected["checkpoint_model"]
    assert v050.generate(data, checkpoint, USER_DIR) == expected["generate"]
