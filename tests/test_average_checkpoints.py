"""fairseq-admin-average: float64 averaging of real fairseq-train checkpoints, checkpoint selection, clear errors."""
import os

import pytest
import torch

from helpers import TINY_TRAIN, USER_DIR, run_cli

from fairseq_admin import checkpoint_safety
from fairseq_admin.cli import average_checkpoints as avg


@pytest.fixture(scope="module")
def trained(synthetic_data, tmp_path_factory):
    """Three epochs of the real fairseq-train: checkpoint{1,2,3}.pt and checkpoint_E_U.pt every 2 updates."""
    save = tmp_path_factory.mktemp("avg_ckpt")
    run_cli("fairseq-train", synthetic_data, *TINY_TRAIN, "--max-tokens", "800", "--max-epoch", "3",
            "--save-interval-updates", "2", "--save-dir", save)
    return {"data": synthetic_data, "save": save}


def _load(path):
    return checkpoint_safety.load_checkpoint(str(path))


def test_average_equals_float64_mean(trained, tmp_path):
    out = tmp_path / "avg.pt"
    proc = run_cli("fairseq-admin-average", "--inputs", trained["save"], "--num-epoch-checkpoints", "3",
                   "--output", out)
    assert "checkpoint3.pt" in proc.stdout
    inputs = [trained["save"] / f"checkpoint{e}.pt" for e in (1, 2, 3)]
    states = [_load(p) for p in inputs]
    result = _load(out)
    assert list(result["model"].keys()) == list(states[0]["model"].keys())
    differs = 0
    for key, value in result["model"].items():
        tensors = [s["model"][key] for s in states]
        expected = (sum(t.double() for t in tensors) / 3).to(tensors[0].dtype)
        assert value.dtype == tensors[0].dtype
        torch.testing.assert_close(value, expected, rtol=0, atol=0)
        differs += int(not torch.equal(value, tensors[-1]))
    assert differs > 0  # the checkpoints really differ: the average is not a copy
    assert result["cfg"] == states[0]["cfg"]
    assert "last_optimizer_state" not in result
    assert result["fairseq_admin_averaged_from"] == [str(p) for p in inputs]


def test_generate_reads_averaged_checkpoint(trained, tmp_path):
    out = tmp_path / "avg.pt"
    assert avg.cli_main(["--inputs", str(trained["save"]), "--num-update-checkpoints", "3", "--output",
                         str(out)]) == 0
    proc = run_cli("fairseq-generate", trained["data"], "--path", out, "--user-dir", USER_DIR, "--gen-subset",
                   "test", "--beam", "2", "--max-tokens", "1000", "--required-batch-size-multiple", "1", "--cpu",
                   "--max-len-a", "0", "--max-len-b", "12")
    assert sum(line.startswith("H-") for line in proc.stdout.splitlines()) == 30


def test_explicit_files_and_mixed_precision(tmp_path):
    a = {"cfg": {"x": 1}, "model": {"w": torch.tensor([1.0, 2.0], dtype=torch.float16),
                                    "b": torch.tensor([0.1], dtype=torch.float64),
                                    "step": torch.tensor([7])}}
    b = {"cfg": {"x": 2}, "model": {"w": torch.tensor([2.0, 3.0], dtype=torch.float16),
                                    "b": torch.tensor([0.4], dtype=torch.float64),
                                    "step": torch.tensor([7])}}
    torch.save(a, tmp_path / "a.pt")
    torch.save(b, tmp_path / "b.pt")
    state = avg.average_checkpoints([str(tmp_path / "a.pt"), str(tmp_path / "b.pt")])
    assert state["model"]["w"].dtype == torch.float16
    assert state["model"]["w"].tolist() == [1.5, 2.5]
    assert state["model"]["b"].item() == pytest.approx(0.25, abs=1e-15)
    assert state["model"]["step"].tolist() == [7]
    assert state["cfg"] == {}  # rebuilt from fairseq's own groups, never copied (issue 27): "x" is none of them


def test_selection_by_number(trained, tmp_path):
    save = trained["save"]
    updates = avg.numbered_checkpoints(str(save), "update")
    assert len(updates) >= 3 and [n for n, _ in updates] == sorted(n for n, _ in updates)
    last2 = avg.resolve_inputs([str(save)], num_update_checkpoints=2)
    assert last2 == [p for _, p in updates[-2:]]
    bound = updates[-2][0]
    assert avg.resolve_inputs([str(save)], num_update_checkpoints=1, upper_bound=bound) == [updates[-2][1]]
    assert avg.resolve_inputs([str(save)], num_epoch_checkpoints=2, upper_bound=2) == [
        str(save / "checkpoint1.pt"), str(save / "checkpoint2.pt")]
    # numeric, not lexicographic, order
    d = tmp_path / "d"
    d.mkdir()
    for e in (2, 9, 10, 11):
        (d / f"checkpoint{e}.pt").write_bytes(b"")
    assert [os.path.basename(p) for p in avg.last_checkpoints(str(d), 2, "epoch")] == ["checkpoint10.pt",
                                                                                       "checkpoint11.pt"]


def _error(argv, capsys):
    assert avg.cli_main(argv) == 2
    return capsys.readouterr().err


def test_too_few_checkpoints_lists_what_was_found(trained, tmp_path, capsys):
    err = _error(["--inputs", str(trained["save"]), "--num-epoch-checkpoints", "5", "--output",
                  str(tmp_path / "o.pt")], capsys)
    assert "found only 3" in err and "checkpoint1.pt, checkpoint2.pt, checkpoint3.pt" in err
    err = _error(["--inputs", str(trained["save"]), "--num-epoch-checkpoints", "2", "--checkpoint-upper-bound", "1",
                  "--output", str(tmp_path / "o.pt")], capsys)
    assert "found only 1" in err and "<= 1" in err
    err = _error(["--inputs", str(trained["save"]), "--output", str(tmp_path / "o.pt")], capsys)
    assert "is a directory" in err
    assert not (tmp_path / "o.pt").exists()


def test_missing_and_corrupt_files_are_named(trained, tmp_path, capsys):
    good = str(trained["save"] / "checkpoint1.pt")
    err = _error(["--inputs", good, str(tmp_path / "nope.pt"), "--output", str(tmp_path / "o.pt")], capsys)
    assert "nope.pt" in err and "not found" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes((trained["save"] / "checkpoint2.pt").read_bytes()[:3000])
    err = _error(["--inputs", good, str(bad), "--output", str(tmp_path / "o.pt")], capsys)
    assert "bad.pt" in err and "corrupt" in err
    assert not (tmp_path / "o.pt").exists()


def test_mismatching_models_are_refused(trained, tmp_path, capsys):
    first = str(trained["save"] / "checkpoint1.pt")
    state = _load(trained["save"] / "checkpoint2.pt")
    model = state["model"]
    key = list(model.keys())[3]
    renamed = dict(state, model={(k + "_x" if k == key else k): v for k, v in model.items()})
    torch.save(renamed, tmp_path / "renamed.pt")
    err = _error(["--inputs", first, str(tmp_path / "renamed.pt"), "--output", str(tmp_path / "o.pt")], capsys)
    assert repr(key) in err and "checkpoint1.pt" in err and "renamed.pt" in err

    reshaped = dict(state, model=dict(model, **{key: torch.zeros(model[key].numel() + 1)}))
    torch.save(reshaped, tmp_path / "reshaped.pt")
    err = _error(["--inputs", first, str(tmp_path / "reshaped.pt"), "--output", str(tmp_path / "o.pt")], capsys)
    assert repr(key) in err and "shape" in err

    ints = {"model": {"n": torch.tensor([1, 2])}}
    torch.save(ints, tmp_path / "i1.pt")
    torch.save({"model": {"n": torch.tensor([1, 3])}}, tmp_path / "i2.pt")
    err = _error(["--inputs", str(tmp_path / "i1.pt"), str(tmp_path / "i2.pt"), "--output", str(tmp_path / "o.pt")],
                 capsys)
    assert "'n'" in err and "non-floating" in err


def test_unsafe_checkpoint_is_refused(trained, tmp_path, capsys):
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = _load(trained["save"] / "checkpoint2.pt")
    state["extra_state"]["payload"] = Payload()
    torch.save(state, tmp_path / "evil.pt")
    err = _error(["--inputs", str(trained["save"] / "checkpoint1.pt"), str(tmp_path / "evil.pt"), "--output",
                  str(tmp_path / "o.pt")], capsys)
    assert "posix.system" in err and "evil.pt" in err and "refused" in err
    assert not marker.exists()
