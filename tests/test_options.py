"""``fairseq-admin-options``: every option the plugin adds, generated from the parsers; ``--user-dir`` from anywhere."""
import argparse
import os
import re
import shlex
import subprocess

import pytest
from fairseq.models.transformer import TransformerModel
from fairseq.optim import OPTIMIZER_REGISTRY
from fairseq.optim.lr_scheduler import LR_SCHEDULER_REGISTRY
from fairseq.tasks import TASK_REGISTRY

import fairseq_admin
from fairseq_admin.cli import options
from fairseq_admin.models import ResidualTransformerModel
from fairseq_admin.schemes import SCHEMES
from helpers import ROOT, TINY, VENV_BIN


def option_strings(add_args, minus=None):
    """{"--option": help} that ``add_args`` adds and ``minus`` does not."""
    def parse(f):
        parser = argparse.ArgumentParser(add_help=False)
        f(parser)
        return {(a.option_strings or [a.dest])[0]: a.help for a in parser._actions}
    result = parse(add_args)
    return {k: v for k, v in result.items() if k not in (parse(minus) if minus else {})}


def listed(text):
    return set(re.findall(r"^  (--[a-z0-9-]+)", text, re.M))


def test_lists_every_option_of_the_model_task_and_optimizer():
    text = options.render()
    expected = {**option_strings(ResidualTransformerModel.add_args, TransformerModel.add_args),
                **option_strings(TASK_REGISTRY["admin_translation"].add_args, TASK_REGISTRY["translation"].add_args),
                **option_strings(OPTIMIZER_REGISTRY["radam"].add_args),
                **option_strings(LR_SCHEDULER_REGISTRY["inverse_sqrt_nowarmup"].add_args)}
    assert {"--residual-scheme", "--layer-init", "--admin-init", "--no-b2t-init-scale", "--log-stability",
            "--radam-unrectified", "--norm", "--decay-period"} <= set(expected)
    assert listed(text) == set(expected)
    flat = " ".join(text.split())
    for option, help_text in expected.items():
        assert " ".join(help_text.split())[:60] in flat, option
    assert "--radam-unrectified {skip,sgd}\n      " in text and "[default: 'skip']" in text


def test_a_new_scheme_option_appears_by_itself_and_only_under_its_scheme(monkeypatch):
    preln = SCHEMES["preln"]
    original = preln.add_args

    def add_args(parser):
        original(parser)
        parser.add_argument("--preln-brand-new", type=int, default=3, help="a new option nobody listed")

    monkeypatch.setattr(preln, "add_args", staticmethod(add_args))
    assert "  --preln-brand-new PRELN_BRAND_NEW\n      a new option nobody listed [default: 3]" in options.render()
    only_preln = listed(options.render("preln"))
    assert "--preln-brand-new" in only_preln and "--residual-scheme" in only_preln
    assert not {"--admin-init", "--no-b2t-init-scale"} & only_preln
    assert "--preln-brand-new" not in listed(options.render("admin"))


def test_scheme_filter_keeps_the_shared_options():
    admin = listed(options.render("admin"))
    assert {"--residual-scheme", "--layer-init", "--admin-init", "--admin-omega", "--radam-unrectified"} <= admin
    assert "--no-b2t-init-scale" not in admin


def run_outside(command, cwd):
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}", OMP_NUM_THREADS="1")
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_console_script_prints_the_installed_user_dir_from_anywhere(tmp_path):
    assert (VENV_BIN / "fairseq-admin-options").exists(), "console script missing: run bash scripts/setup_env.sh"
    result = run_outside("fairseq-admin-options --user-dir && fairseq-admin-options --scheme b2t", tmp_path)
    assert result.returncode == 0, result.stderr
    user_dir, listing = result.stdout.split("\n", 1)
    assert user_dir == os.path.dirname(fairseq_admin.__file__)
    assert os.path.isfile(os.path.join(user_dir, "__init__.py"))
    assert "--no-b2t-init-scale" in listing and "--admin-init" not in listing
    bad = run_outside("fairseq-admin-options --scheme nope", tmp_path)
    assert bad.returncode == 2 and "invalid choice: 'nope'" in bad.stderr and "Traceback" not in bad.stderr


IMPORTS_TORCH = """
import importlib, sys
module, sys.argv = sys.argv[1], sys.argv[2:]  # argv[0] a fairseq-admin-* name, as the console script's
try:
    status = importlib.import_module(module).cli_main()
except SystemExit as exit:
    status = exit.code
print("torch imported:", "torch" in sys.modules, "fairseq imported:", "fairseq" in sys.modules, "status:", status)
"""


@pytest.mark.parametrize("module, argv", [
    ("fairseq_admin.cli.options", ["fairseq-admin-options", "--user-dir"]),
    ("fairseq_admin.cli.average_checkpoints", ["fairseq-admin-average", "--help"]),
    ("fairseq_admin.cli.average_checkpoints", ["fairseq-admin-average", "--inputs", "missing.pt", "--output", "a.pt"]),
    ("fairseq_admin.cli.export", ["fairseq-admin-export", "--help"]),
    ("fairseq_admin.cli.export", ["fairseq-admin-export", "--checkpoint", "missing.pt", "--out", "x.pt"]),
    ("fairseq_admin.cli.diagnose", ["fairseq-admin-diagnose", "--help"]),
])
def test_help_and_argument_errors_import_neither_torch_nor_fairseq(module, argv, tmp_path):
    """The console commands answer --help (and export a missing file) without importing torch or fairseq, 4-5 s on
    this machine: issue 31's rough edge (the plugin registers itself only where a command builds or loads a model)."""
    proc = subprocess.run([str(VENV_BIN / "python"), "-c", IMPORTS_TORCH, module, *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert "torch imported: False fairseq imported: False" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    status = proc.stdout.rsplit("status: ", 1)[-1].strip()
    refused = argv[1] in ("--checkpoint", "--inputs")  # a missing file: one line, status 2
    assert status == ("2" if refused else "0") or (status == "None" and "--user-dir" in argv)


def test_readme_training_command_form_runs_outside_the_repository(synthetic_data, tmp_path):
    """Every README example takes --user-dir from the command; fairseq-train runs with it from another folder."""
    readme = (ROOT / "README.md").read_text()
    assert "--user-dir fairseq_admin" not in readme
    assert '--user-dir "$(fairseq-admin-options --user-dir)"' in readme
    args = [str(synthetic_data), "--task", "translation", "--arch", "preln_transformer", "--encoder-layers", "1",
            "--decoder-layers", "1", *TINY, "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "500",
            "--max-update", "1", "--save-dir", str(tmp_path / "ckpt"), "--no-save", "--cpu", "--num-workers", "0"]
    command = 'fairseq-train --user-dir "$(fairseq-admin-options --user-dir)" ' + " ".join(map(shlex.quote, args))
    result = run_outside(command, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ResidualTransformerModel" in result.stdout + result.stderr
