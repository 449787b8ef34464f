"""Issue 27, "code execution without any pickle" and the two silent dictionary cases.

A checkpoint holding nothing but allow-listed types (a Namespace and strings) ran code, because fairseq ``eval``s some
config strings while it builds the model (``xformers_att_config``, ``adaptive_softmax_cutoff``, every field of an
architecture such as fconv); export and average carried the string into files that stock fairseq then ran. Every load
through the plugin now validates the config first (fairseq_admin/config_validation.py); export and average write a
config rebuilt from fairseq's own field lists; averaging checkpoints of different same-size dictionaries and exporting
with another same-size data-bin are refused (fairseq_admin/dictionary_checksum.py). Each reproduction here ran the
payload or passed silently before the fix.
"""
import argparse
import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import ROOT, TINY, USER_DIR, VENV_BIN, run_cli
from helpers import assert_one_error_line as _one_error_line

from fairseq_admin import checkpoint_safety
from fairseq_admin.cli import average_checkpoints as avg
from fairseq_admin.cli import export

UNSAFE_SWITCH = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
GENERATE = ["--gen-subset", "test", "--beam", "1", "--max-tokens", "1000", "--cpu", "--max-len-a", "0",
            "--max-len-b", "12"]
TRAIN = ["--task", "translation", "--arch", "admin_transformer", "--encoder-layers", "2", "--decoder-layers", "1",
         *TINY, "--share-all-embeddings", "--optimizer", "radam", "--lr", "0.005", "--lr-scheduler", "inverse_sqrt",
         "--warmup-updates", "5", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
         "--max-tokens", "800", "--max-update", "3", "--cpu", "--num-workers", "0", "--no-progress-bar", "--seed", "1",
         "--no-epoch-checkpoints", "--disable-validation", "--user-dir", USER_DIR]


def payload(marker):
    """A config string whose eval runs ``touch MARKER`` (and evaluates to None, so a build would go on normally)."""
    return f"[__import__('os').system('touch {marker}')] and None"


def _run(cmd, env_extra=None, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop(UNSAFE_SWITCH, None)
    env.update(env_extra or {})
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, env=env, **kwargs)


def _tool(main, argv, capsys):
    """Run ``fairseq-admin-export``/``-average`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _refused_in_one_line(status, err, *needles):
    assert status != 0 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])


def _tamper(src, dst, **model_fields):
    """``src`` re-saved with ``cfg.model`` fields replaced, as the issue's reproduction does."""
    state = checkpoint_safety.load_checkpoint(src)
    model = copy.copy(state["cfg"]["model"])
    for key, value in model_fields.items():
        setattr(model, key, value)
    state["cfg"]["model"] = model
    torch.save(state, dst)
    return dst


def _corpus(tmp_path_factory, prefix, name):
    """The synthetic task of conftest.py over words ``<prefix>0`` ... ``<prefix>23`` (dictionaries of one size)."""
    import random

    rng = random.Random(0)
    raw = tmp_path_factory.mktemp(f"{name}_raw")
    words = [f"{prefix}{i}" for i in range(24)]
    for split, n in (("train", 400), ("valid", 40), ("test", 30)):
        src = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(n)]
        (raw / f"{split}.src").write_text("".join(s + "\n" for s in src))
        (raw / f"{split}.tgt").write_text("".join(" ".join(reversed(s.split())) + "\n" for s in src))
    out = tmp_path_factory.mktemp(f"{name}_bin")
    run_cli("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--trainpref", raw / "train",
            "--validpref", raw / "valid", "--testpref", raw / "test", "--destdir", out, "--joined-dictionary",
            "--workers", "1")
    return out


@pytest.fixture(scope="module")
def runs(synthetic_data, tmp_path_factory):
    """Tiny admin_transformer runs (3 updates, the plugin loaded) on the synthetic data-bin and on another data-bin
    whose dictionaries have the same size but other symbols."""
    other = _corpus(tmp_path_factory, "v", "other")
    assert len((Path(other) / "dict.src.txt").read_text().splitlines()) == \
        len((Path(synthetic_data) / "dict.src.txt").read_text().splitlines())
    out = {}
    for name, data in (("a", synthetic_data), ("b", other)):
        save = tmp_path_factory.mktemp(f"hostile_cfg_{name}")
        run_cli("fairseq-train", data, *TRAIN, "--save-dir", save, "--save-interval-updates", "1",
                "--keep-interval-updates", "3")
        out[name] = {"data": Path(data), "save": save, "last": save / "checkpoint_last.pt"}
    return out


# ---- the reproduction: fairseq-generate through the plugin -------------------------------------------------
def test_generate_refuses_code_in_xformers_att_config(runs, tmp_path):
    """The issue's reproduction (fairseq-generate --user-dir; the other fields go through the same loader below)."""
    marker = tmp_path / "PWNED"
    evil = _tamper(runs["a"]["last"], tmp_path / "evil.pt", xformers_att_config=payload(marker))
    proc = _run([VENV_BIN / "fairseq-generate", runs["a"]["data"], "--path", evil, "--user-dir", USER_DIR, *GENERATE])
    assert not marker.exists(), "fairseq-generate ran the code in cfg.model.xformers_att_config"
    _one_error_line(proc, "refused to load checkpoint", "evil.pt", "cfg.model.xformers_att_config")


def test_hub_interface_refuses_code_in_adaptive_softmax_cutoff(runs, tmp_path):
    """TransformerModel.from_pretrained with the plugin imported (it also sets up the checkpoint's own task)."""
    marker = tmp_path / "PWNED"
    evil = _tamper(runs["a"]["last"], tmp_path / "evil.pt", adaptive_softmax_cutoff=payload(marker))
    hub = ("import sys, fairseq_admin\n"
           "from fairseq.models.transformer import TransformerModel\n"
           "TransformerModel.from_pretrained(sys.argv[1], checkpoint_file=sys.argv[2], data_name_or_path=sys.argv[3])\n")
    proc = _run([sys.executable, "-c", hub, evil.parent, evil.name, runs["a"]["data"]])
    assert not marker.exists(), "the hub interface ran the code in cfg.model.adaptive_softmax_cutoff"
    _one_error_line(proc, "refused to load checkpoint", "cfg.model.adaptive_softmax_cutoff")


def test_fconv_architecture_is_refused(runs, tmp_path):
    """fconv evaluates its encoder_layers (fairseq/models/fconv.py:123): a checkpoint naming it is not built."""
    marker = tmp_path / "PWNED"
    evil = _tamper(runs["a"]["last"], tmp_path / "evil.pt", arch="fconv", _name="fconv",
                   encoder_layers=f"[__import__('os').system('touch {marker}')] and [(16, 3)]",
                   decoder_layers="[(16, 3)]", decoder_attention="True")
    proc = _run([VENV_BIN / "fairseq-generate", runs["a"]["data"], "--path", evil, "--user-dir", USER_DIR, *GENERATE])
    assert not marker.exists(), "fairseq built the fconv model and ran its encoder_layers"
    _one_error_line(proc, "refused to load checkpoint", "'fconv'", "Transformer family")


def _field_sites(state, field):
    """Where to plant ``field``: every cfg group that has it, else cfg.model."""
    groups = [g for g, v in state["cfg"].items() if isinstance(v, dict) and field in v]
    return groups or ["model"]


def test_every_evaluated_field_is_refused_through_fairseqs_loader(runs, tmp_path):
    """Each field of the audit, planted where fairseq keeps it, in fairseq's own loading path
    (checkpoint_utils.load_model_ensemble_and_task, as the hub interface and the benchmark loaders use it)."""
    from fairseq import checkpoint_utils
    from fairseq_admin.config_validation import EVALUATED_FIELDS

    marker = tmp_path / "PWNED"
    for field in EVALUATED_FIELDS:
        state = checkpoint_safety.load_checkpoint(runs["a"]["last"])
        for group in _field_sites(state, field):
            if group == "model":
                setattr(state["cfg"]["model"], field, payload(marker))
            else:
                state["cfg"][group][field] = payload(marker)
        evil = tmp_path / f"{field}.pt"
        torch.save(state, evil)
        with pytest.raises(checkpoint_safety.CheckpointError, match=re.escape(field)) as caught:
            checkpoint_utils.load_model_ensemble_and_task([str(evil)], arg_overrides={"data": str(runs["a"]["data"])})
        assert "\n" not in str(caught.value) and str(evil) in str(caught.value)
        assert not marker.exists(), field


def test_legacy_args_nested_groups_and_attributes_are_checked(runs, tmp_path):
    """The same payload in an ``args``-only checkpoint (fairseq < 0.10), in a nested ``encoder`` group, and in an
    attribute that differs from its item (CTranslate2 reads attributes, fairseq items)."""
    import collections

    base = checkpoint_safety.load_checkpoint(runs["a"]["last"])
    legacy = dict(base, cfg=None, args=argparse.Namespace(**vars(base["cfg"]["model"])))
    legacy["args"].adaptive_softmax_cutoff = payload(tmp_path / "x")
    nested = copy.deepcopy(base)
    nested["cfg"]["model"].encoder = {"xformers_att_config": payload(tmp_path / "x")}
    attribute = copy.deepcopy(base)
    model = collections.OrderedDict(vars(base["cfg"]["model"]))
    model.__dict__.update(model)
    model.__dict__["adaptive_softmax_cutoff"] = payload(tmp_path / "x")
    attribute["cfg"]["model"] = model
    for name, state, where in (("legacy", legacy, "args.adaptive_softmax_cutoff"),
                               ("nested", nested, "cfg.model.encoder.xformers_att_config"),
                               ("attribute", attribute, "cfg.model.adaptive_softmax_cutoff")):
        torch.save(state, tmp_path / f"{name}.pt")
        with pytest.raises(checkpoint_safety.CheckpointError, match=re.escape(where)):
            checkpoint_safety.load_checkpoint(tmp_path / f"{name}.pt")


def test_plain_literals_pass_and_everything_else_is_refused():
    from fairseq_admin.config_validation import ConfigError, check_field

    good = [("adam_betas", "(0.9, 0.98)"), ("adam_betas", [0.9, 0.999]), ("adaptive_softmax_cutoff", "10000,50000"),
            ("adaptive_softmax_cutoff", None), ("adaptive_softmax_cutoff", 5),
            ("xformers_att_config", '{"name": "scaled_dot_product", "dropout": 0.1}'), ("left_pad_source", "True"),
            ("left_pad_source", False), ("model_overrides", "{}"), ("encoder_layers", 6), ("wer_args", None)]
    for field, value in good:
        check_field(field, value, f"cfg.model.{field}")
    bad = [("adam_betas", "__import__('os').getcwd()"), ("adam_betas", "(lambda: (0.9, 0.98))()"),
           ("adam_betas", "0.9"), ("adaptive_softmax_cutoff", "[1] * 3"), ("adaptive_softmax_cutoff", "[1.5]"),
           ("xformers_att_config", "dict(name='x')"), ("xformers_att_config", "[1, 2]"),
           ("left_pad_source", "open('f')"), ("model_overrides", "{'a': print}"), ("encoder_layers", "[(512, 3)] * 20"),
           ("wer_args", "9" * 20000), ("xformers_att_config", "(" * 1000 + ")" * 1000),
           ("xformers_att_config", argparse.Namespace())]
    for field, value in bad:
        with pytest.raises(ConfigError, match=re.escape(f"cfg.model.{field}")):
            check_field(field, value, f"cfg.model.{field}")


def test_every_eval_call_site_of_the_installed_fairseq_is_audited():
    """grep the installed fairseq and fairseq_cli (fairseq/examples aside: fairseq's tools never import it) for
    eval( / exec( / eval_str_list / eval_str_dict / eval_bool; a call site missing from the audit of
    fairseq_admin/config_validation.py (a new fairseq) fails here, and so does one the audit cites that is gone."""
    import fairseq
    from fairseq_admin import config_validation

    pattern = re.compile(r"(?<![\w.])(eval|exec)\s*\(|\beval_str_list\b|\beval_str_dict\b|\beval_bool\b")
    site_packages = Path(fairseq.__file__).resolve().parents[1]
    found = set()
    for package in ("fairseq", "fairseq_cli"):
        for path in sorted((site_packages / package).rglob("*.py")):
            relative = path.relative_to(site_packages)
            if relative.parts[:2] == ("fairseq", "examples"):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if pattern.search(line):
                    found.add(f"{relative.as_posix()}:{number}")
    known = set(config_validation.known_call_sites())
    assert not found - known, f"eval call sites of fairseq missing from the audit: {sorted(found - known)}"
    assert not known - found, f"audited call sites no longer in fairseq: {sorted(known - found)}"
    assert [site for site in known if site not in config_validation.__doc__] == []  # the docstring lists each


# ---- export and average: never carry a string into their output ---------------------------------------------------
def test_export_refuses_code_in_adaptive_softmax_cutoff_so_stock_fairseq_never_runs_it(runs, tmp_path, capsys):
    """The issue's second reproduction: the string through fairseq-admin-export, then stock fairseq-generate
    (no --user-dir, as the README's deployment route) on whatever the export wrote."""
    marker = tmp_path / "PWNED"
    evil = _tamper(runs["a"]["last"], tmp_path / "evil.pt", adaptive_softmax_cutoff=payload(marker))
    out = tmp_path / "export" / "model.pt"
    out.parent.mkdir()
    status, _, err = _tool(export.cli_main, ["--checkpoint", evil, "--out", out, "--data", runs["a"]["data"]], capsys)
    if out.exists():  # what the deployment route then does with it
        _run([VENV_BIN / "fairseq-generate", runs["a"]["data"], "--path", out, *GENERATE])
    assert not marker.exists(), "the exported file ran the code in stock fairseq-generate"
    assert not out.exists()
    _refused_in_one_line(status, err, "fairseq-admin-export: error:", "cfg.model.adaptive_softmax_cutoff")


def test_export_writes_only_fields_of_fairseqs_lists(runs, tmp_path, capsys):
    """A field no fairseq dataclass defines, planted in a stock group of the input, is not in the export."""
    state = checkpoint_safety.load_checkpoint(runs["a"]["last"])
    state["cfg"]["criterion"]["not_a_fairseq_field"] = "anything"
    state["cfg"]["common"]["not_a_fairseq_field"] = "anything"
    torch.save(state, tmp_path / "in.pt")
    assert _tool(export.cli_main, ["--checkpoint", tmp_path / "in.pt", "--out", tmp_path / "out.pt"], capsys)[0] == 0
    cfg = torch.load(tmp_path / "out.pt", weights_only=True)["cfg"]
    assert cfg["criterion"]["_name"] == "label_smoothed_cross_entropy"
    assert [g for g, v in cfg.items() if isinstance(v, dict) and "not_a_fairseq_field" in v] == []


def test_average_rebuilds_the_config_from_fairseqs_lists(runs, tmp_path, capsys):
    """Fields fairseq does not define are dropped from the average; everything fairseq wrote is kept as it was."""
    first, second = sorted(runs["a"]["save"].glob("checkpoint_1_*.pt"))[:2]
    state = checkpoint_safety.load_checkpoint(first)
    state["cfg"]["model"].not_a_fairseq_option = "anything"
    state["cfg"]["common"]["not_a_fairseq_field"] = "anything"
    torch.save(state, tmp_path / "in.pt")
    status, _, err = _tool(avg.cli_main, ["--inputs", tmp_path / "in.pt", second, "--output", tmp_path / "avg.pt"],
                           capsys)
    assert status == 0, err
    averaged = checkpoint_safety.load_checkpoint(tmp_path / "avg.pt")
    assert not hasattr(averaged["cfg"]["model"], "not_a_fairseq_option")
    assert "not_a_fairseq_field" not in averaged["cfg"]["common"]
    original = checkpoint_safety.load_checkpoint(first)
    assert vars(averaged["cfg"]["model"]) == vars(original["cfg"]["model"])
    assert {g: v for g, v in averaged["cfg"].items() if g != "model"} == \
        {g: v for g, v in original["cfg"].items() if g != "model"}


def test_average_refuses_code_in_the_config(runs, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    first, second = sorted(runs["a"]["save"].glob("checkpoint_1_*.pt"))[:2]
    evil = _tamper(first, tmp_path / "evil.pt", xformers_att_config=payload(marker))
    status, _, err = _tool(avg.cli_main, ["--inputs", evil, second, "--output", tmp_path / "avg.pt"], capsys)
    assert not (tmp_path / "avg.pt").exists() and not marker.exists()
    _refused_in_one_line(status, err, "fairseq-admin-average: error:", "cfg.model.xformers_att_config")


# ---- the silent cases: dictionaries of the same size -------------------------------------------------------------
def test_training_records_the_dictionaries_checksums(runs):
    from fairseq_admin import dictionary_checksum

    for run in runs.values():
        state = checkpoint_safety.load_checkpoint(run["last"])
        assert state["fairseq_admin_dictionaries"] == dictionary_checksum.of_data_bin(str(run["data"]),
                                                                                      ("src", "tgt"))
    assert runs["a"]["data"] != runs["b"]["data"]


def test_average_refuses_checkpoints_of_other_dictionaries_of_the_same_size(runs, tmp_path, capsys):
    status, _, err = _tool(avg.cli_main, ["--inputs", runs["a"]["last"], runs["b"]["last"], "--output",
                                          tmp_path / "avg.pt"], capsys)
    assert not (tmp_path / "avg.pt").exists()
    _refused_in_one_line(status, err, "fairseq-admin-average: error:", "different source and target dictionaries",
                         "recorded at training time")


def test_average_without_recorded_checksums_compares_the_training_data_bins(runs, tmp_path, capsys):
    inputs = []
    for name in ("a", "b"):
        state = checkpoint_safety.load_checkpoint(runs[name]["last"])
        del state["fairseq_admin_dictionaries"]  # as written without the plugin
        torch.save(state, tmp_path / f"{name}.pt")
        inputs.append(tmp_path / f"{name}.pt")
    status, _, err = _tool(avg.cli_main, ["--inputs", *inputs, "--output", tmp_path / "avg.pt"], capsys)
    _refused_in_one_line(status, err, "different source and target dictionaries", "from its training data-bin")


def test_export_refuses_another_data_bin_of_the_same_size(runs, tmp_path, capsys):
    out = tmp_path / "model.pt"
    status, _, err = _tool(export.cli_main, ["--checkpoint", runs["a"]["last"], "--out", out, "--data",
                                             runs["b"]["data"]], capsys)
    assert not out.exists()
    _refused_in_one_line(status, err, "fairseq-admin-export: error:", f"--data {runs['b']['data']}", "other symbols")
    status, stdout, _ = _tool(export.cli_main, ["--checkpoint", runs["a"]["last"], "--out", out, "--data",
                                                runs["a"]["data"]], capsys)
    assert status == 0 and "dictionaries are the checkpoint's (recorded at training time)" in stdout


def test_export_says_when_only_sizes_can_be_compared(runs, tmp_path, capsys):
    state = checkpoint_safety.load_checkpoint(runs["a"]["last"])
    del state["fairseq_admin_dictionaries"]
    state["cfg"]["task"]["data"] = str(tmp_path / "gone")
    state["cfg"]["model"].data = str(tmp_path / "gone")
    torch.save(state, tmp_path / "in.pt")
    status, stdout, _ = _tool(export.cli_main, ["--checkpoint", tmp_path / "in.pt", "--out", tmp_path / "model.pt",
                                                "--data", runs["b"]["data"]], capsys)
    assert status == 0 and "dictionaries compared by size only" in stdout


# ---- the benchmark's stock loader and CTranslate2 ----------------------------------------------------------------
def test_deploy_speed_stock_loader_validates_the_config(runs, tmp_path, capsys):
    """benchmarks/deploy_speed.py's loader for the exported model (user_dir=False), in a fresh process."""
    marker = tmp_path / "PWNED"
    assert _tool(export.cli_main, ["--checkpoint", runs["a"]["last"], "--out", tmp_path / "model.pt"], capsys)[0] == 0
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    state["cfg"]["model"]["xformers_att_config"] = payload(marker)
    state["cfg"]["model"].__dict__["xformers_att_config"] = payload(marker)
    torch.save(state, tmp_path / "evil.pt")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import deploy_speed; "
            "deploy_speed.token_log_probs(sys.argv[2], sys.argv[3], 'test', 1, user_dir=False)")
    proc = _run([sys.executable, "-c", code, ROOT / "benchmarks", tmp_path / "evil.pt", runs["a"]["data"]])
    assert not marker.exists(), "deploy_speed's stock loader ran the code"
    assert proc.returncode != 0 and "cfg.model.xformers_att_config" in proc.stderr, proc.stderr[-3000:]


def test_ctranslate2_converter_refuses_pickles_even_with_the_unsafe_switch(runs, tmp_path, capsys):
    """What docs/tools.md says: ct2-fairseq-converter passes weights_only=True itself, so
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 does not turn its protection off (its --unsafe_deserialization would)."""
    pytest.importorskip("ctranslate2")
    from helpers import evil_checkpoint

    assert _tool(export.cli_main, ["--checkpoint", runs["a"]["last"], "--out", tmp_path / "model.pt"], capsys)[0] == 0
    marker = tmp_path / "PWNED"
    evil_checkpoint(tmp_path / "model.pt", tmp_path / "evil.pt", marker)
    proc = _run([VENV_BIN / "ct2-fairseq-converter", "--model_path", tmp_path / "evil.pt", "--data_dir",
                 runs["a"]["data"], "--output_dir", tmp_path / "ct2"], {UNSAFE_SWITCH: "1"})
    assert proc.returncode != 0 and not marker.exists(), proc.stderr[-2000:]
    assert "Weights only load failed" in proc.stderr
