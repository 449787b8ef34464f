"""The depth grid's cells: a named variant (admin-ologn) trains the registered scheme with its extra options, and its
fairseq-train command builds the model the variant names."""
import math
import subprocess
import sys

import torch

from helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import depth_grid
finally:
    sys.path.remove(str(ROOT / "benchmarks"))


class Args:
    max_tokens, max_update, validate_interval, log_interval = 3500, 1000, 50, 10


def test_variant_cell_trains_its_scheme_with_its_options_and_saves_no_profile():
    cmd = depth_grid.train_command(Args(), "/data", "/save", "standard", "admin-ologn", "18-18", 1)
    assert cmd[cmd.index("--arch") + 1] == "admin_transformer"
    assert cmd[cmd.index("--admin-init") + 1] == "O(logn)"
    assert "--admin-profile-save" not in cmd  # nothing is profiled
    plain = depth_grid.train_command(Args(), "/data", "/save", "standard", "admin", "18-18", 1)
    assert "--admin-init" not in plain and "--admin-profile-save" in plain
    # the same command apart from the variant's options
    assert [a for a in cmd if a not in ("--admin-init", "O(logn)")] == \
        [a for a in plain if a not in ("--admin-profile-save", "/save/profile.ratio.init")]


def test_variant_command_builds_the_closed_form_omega(tmp_path):
    """fairseq's own parser and task build the model from the cell's command: every ω of the 6-6 model is
    sqrt((n+1)/ln(n+1) - 1) with n = 12 encoder and 18 decoder residual sublayers at 6-6 (admin-torch's
    calculate_init)."""
    from fairseq import options, tasks
    (tmp_path / "data-bin").mkdir()
    for lang in ("en", "de"):
        (tmp_path / "data-bin" / f"dict.{lang}.txt").write_text("".join(f"w{i} 1\n" for i in range(20)))
    cmd = depth_grid.train_command(Args(), str(tmp_path), str(tmp_path / "save"), "standard", "admin-ologn", "6-6", 1)
    argv = cmd[cmd.index("fairseq_cli.train") + 1:]
    argv[argv.index("--user-dir") + 1] = str(ROOT / "fairseq_admin")
    # the grid's data-bin names the pair in its file names; this one has only the dictionaries
    args = options.parse_args_and_arch(options.get_training_parser(), argv + ["-s", "en", "-t", "de"])
    model = tasks.setup_task(args).build_model(args)
    for stack, n in (("encoder", 12), ("decoder", 18)):
        want = math.sqrt((n + 1) / math.log(n + 1) - 1)
        for layer in model.scheme_layers(stack):
            assert torch.equal(layer.omega.detach(), torch.full_like(layer.omega, want)), stack
    assert not model.needs_profiling()


def test_unknown_variant_is_refused_before_any_work(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "depth_grid.py"), "--work", str(tmp_path),
                          "--cells", "standard_admin-olog_18-18_seed1", "--dry-run"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "bad cell 'standard_admin-olog_18-18_seed1'" in res.stderr and "admin-ologn" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_run_grid_help_lists_every_variant_as_depth_grid_defines_it():
    """run_grid.sh --help reads VARIANTS from depth_grid.py, so a new variant shows up without editing the script."""
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "run_grid.sh"), "--help"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert res.returncode == 0, res.stderr
    for name, (scheme, opts, _colour) in depth_grid.VARIANTS.items():
        assert f"{name:<18}= {scheme} with {' '.join(opts)}" in res.stdout


def test_cell_logs_stability_and_reports_its_maxima(tmp_path):
    """Every cell trains with --log-stability at its log interval, and its result keeps the largest residual-sum
    activation, per-layer and total gradient norm seen, and the time per update (issue 30's per-cell figures), read
    from fairseq's json log lines (a line without stability figures counts for the total gradient norm only)."""
    cmd = depth_grid.train_command(Args(), "/data", "/save", "standard", "preln", "6-6", 1)
    assert cmd[cmd.index("--log-stability") + 1] == str(Args.log_interval)
    log = tmp_path / "train.log"
    log.write_text(
        '2026-12-07 01:00:00 | INFO | train_inner | {"epoch": 1, "update": 0.1, "loss": "9.1", "nll_loss": "9", '
        '"gnorm": "3.5", "lr": "1e-4", "wps": "900", "ups": "0.5", "num_updates": "10", "stab_act_max": "41.2", '
        '"stab_g_enc0": "0.7", "stab_g_dec5": "1.9", "stab_g_last_ffn": "9.9", "stab_beta_enc0": "0.5"}\n'
        '2026-12-07 01:00:20 | INFO | train_inner | {"epoch": 1, "update": 0.2, "loss": "8.0", "nll_loss": "7.9", '
        '"gnorm": "7.25", "lr": "2e-4", "wps": "950", "ups": "0.25", "num_updates": "20"}\n'
        '2026-12-07 01:00:40 | INFO | train_inner | {"epoch": 1, "update": 0.3, "loss": "7.5", "nll_loss": "7.4", '
        '"gnorm": "1.5", "lr": "3e-4", "wps": "990", "ups": "0.4", "num_updates": "30", "stab_act_max": "63.5", '
        '"stab_g_enc0": "2.5", "stab_g_dec5": "0.2"}\n')
    train, _valid, _fpe = depth_grid.parse_log(str(log))
    assert depth_grid.stability_maxima(train) == {"max_gnorm": 7.25, "max_activation": 63.5, "max_layer_gnorm": 2.5,
                                                  "lines_with_stability": 2}
    assert depth_grid._inverse_median([p["ups"] for p in train]) == 2.5  # 1/0.4: the median of 2, 2.5, 4 s
