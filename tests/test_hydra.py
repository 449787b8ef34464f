"""fairseq-hydra-train (issue 31): every scheme trains from a shipped config, a recipe row's config is the same
training configuration as its ``train.sh --dry-run`` command (the quick start's config as the command
``quickstart.sh --print-train-command`` prints), a hydra-written checkpoint translates, and a misspelt key is refused
in one line.

Before fairseq_admin/models/hydra_config.py, a plugin option in a hydra ``model`` section was dropped by fairseq's
``TransformerConfig.from_namespace`` and every run failed with ``AttributeError: invalid argument residual_scheme``.
"""
import argparse
import math
import os
import re

import pytest

from fairseq_admin import recipe_configs, recipes
from fairseq_admin.schemes import SCHEMES
from helpers import USER_DIR, assert_one_error_line, run_cli

BASE_CONFIG = "en-de_postln_6-6_liu2020"  # a row with no scheme-specific option: every scheme can take its place
TINY = ["++" + o for o in (  # ++: set whether or not the config has the key
    "model.encoder_layers=2", "model.decoder_layers=2", "model.encoder_embed_dim=32", "model.decoder_embed_dim=32",
    "model.encoder_ffn_embed_dim=64", "model.decoder_ffn_embed_dim=64", "model.encoder_attention_heads=2",
    "model.decoder_attention_heads=2", "common.fp16=false", "common.cpu=true", "optimization.max_update=2",
    "optimization.update_freq=[1]", "dataset.max_tokens=600", "dataset.num_workers=0", "task.source_lang=src",
    "task.target_lang=tgt", f"common.user_dir={USER_DIR}", "checkpoint.no_epoch_checkpoints=true")]


def hydra_train(config_name, *overrides, cwd):
    return run_cli("fairseq-hydra-train", "--config-dir", recipe_configs.CONFIG_DIR, "--config-name", config_name,
                   *overrides, f"hydra.run.dir={cwd}/hydra", f"hydra.sweep.dir={cwd}/multirun", check=False,
                   cwd=cwd)


def test_every_scheme_trains_from_a_shipped_config(synthetic_data, tmp_path):
    """One multirun job per registered scheme: the postln row's config with the scheme's architecture in its place,
    tiny dimensions, 2 updates; each job saves a checkpoint whose configuration names its scheme."""
    from fairseq_admin.checkpoint_safety import load_checkpoint

    archs = ",".join(f"{name}_transformer_wmt_en_de" for name in SCHEMES)
    proc = hydra_train(BASE_CONFIG, "--multirun", f"model._name={archs}", f"task.data={synthetic_data}",
                       f"checkpoint.save_dir={tmp_path}/ckpt/${{model._name}}", *TINY, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    for name in SCHEMES:
        state = load_checkpoint(tmp_path / "ckpt" / f"{name}_transformer_wmt_en_de" / "checkpoint_last.pt")
        model = state["cfg"]["model"]
        assert model["residual_scheme"] == name and model["encoder_layers"] == 2, (name, model)
        assert state["optimizer_history"][-1]["num_updates"] == 2


def test_hydra_checkpoint_translates_and_resumes(synthetic_data, tmp_path):
    """Admin (a scheme with options, profiling and a resolved --layer-init) from its own row's config: trained,
    resumed by a second run, then translated by fairseq-generate, which builds the model from the saved hydra
    section; the section records the values the build resolved, as a command-line checkpoint does."""
    from fairseq_admin.checkpoint_safety import load_checkpoint

    common = [f"task.data={synthetic_data}", f"checkpoint.save_dir={tmp_path}/ckpt",
              *TINY]  # the profile goes to ${checkpoint.save_dir}/profile.ratio.init, as with train.sh
    first = hydra_train("en-de_admin_6-6_liu2020", *common, cwd=tmp_path)
    assert first.returncode == 0, (first.stdout + first.stderr)[-5000:]
    assert (tmp_path / "ckpt" / "profile.ratio.init").exists()
    resumed = hydra_train("en-de_admin_6-6_liu2020", *[o.replace("max_update=2", "max_update=3") for o in common],
                          cwd=tmp_path)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-5000:]
    state = load_checkpoint(tmp_path / "ckpt" / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 3
    assert state["cfg"]["model"]["arch"] == "admin_transformer_wmt_en_de"  # export/average/resume checks read it
    assert state["cfg"]["model"]["layer_init"] == "fairseq-0.9" and state["cfg"]["model"]["residual_scheme"] == "admin"
    exported = run_cli("fairseq-admin-export", "--checkpoint", tmp_path / "ckpt" / "checkpoint_last.pt", "--out",
                       tmp_path / "stock.pt", check=False)  # reads the saved arch, as for a command-line checkpoint
    assert exported.returncode == 0 and (tmp_path / "stock.pt").exists(), exported.stderr[-2000:]
    _add_a_later_option(tmp_path / "ckpt" / "checkpoint_last.pt")  # as a later version may write: still loads
    gen = run_cli("fairseq-generate", synthetic_data, "--user-dir", USER_DIR, "--path",
                  tmp_path / "ckpt" / "checkpoint_last.pt", "--gen-subset", "valid", "--beam", "2", "--cpu",
                  "--max-tokens", "2000", "--source-lang", "src", "--target-lang", "tgt")
    assert gen.stdout.count("\nH-") + gen.stdout.startswith("H-") == 40, gen.stdout[-2000:]


def _add_a_later_option(path):
    import torch

    state = torch.load(path, weights_only=False)  # our own test file; fairseq saves cfg as plain containers
    state["cfg"]["model"]["a_later_option"] = 1
    torch.save(state, path)


def test_relative_paths_resolve_from_where_the_command_runs(synthetic_data, tmp_path):
    """A shipped config run as the docs show it (no hydra.run.dir): the relative data path is found and the
    checkpoints land in ./checkpoints/<row>/ of the working folder, so a second run resumes (hydra 1.3 would run the
    job in a new outputs/<date>/<time>/ without the configs' own hydra.run.dir)."""
    (tmp_path / "data-bin").symlink_to(synthetic_data)
    tiny = [o.replace("max_update=2", "max_update=1") for o in TINY]
    proc = run_cli("fairseq-hydra-train", "--config-dir", recipe_configs.CONFIG_DIR, "--config-name", BASE_CONFIG,
                   "task.data=data-bin", *tiny, check=False, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (tmp_path / "checkpoints" / BASE_CONFIG / "checkpoint_last.pt").exists()
    assert not (tmp_path / "outputs").exists()


def test_a_misspelt_model_key_is_one_line(synthetic_data, tmp_path):
    proc = hydra_train(BASE_CONFIG, f"task.data={synthetic_data}", f"checkpoint.save_dir={tmp_path}/ckpt",
                       "++model.admin_omgea=2", *TINY, cwd=tmp_path)
    assert_one_error_line(proc, "model.admin_omgea is not an option of postln_transformer_wmt_en_de")
    assert not (tmp_path / "ckpt" / "checkpoint_last.pt").exists()


def test_a_scheme_refusal_is_one_line_under_hydra(synthetic_data, tmp_path):
    """The scheme's own start-up checks keep their one-line form inside a hydra job."""
    proc = hydra_train("en-de_admin_6-6_liu2020", f"task.data={synthetic_data}", f"checkpoint.save_dir={tmp_path}/c",
                       "++model.admin_omega=nonsense", *TINY, cwd=tmp_path)
    assert_one_error_line(proc, "--admin-omega")


def test_a_quoted_yaml_value_is_refused_before_training(synthetic_data, tmp_path):
    """A switch given the string "false" (hydra: quoted) is refused in one line; argparse-by-hand would count any
    non-empty string as true and train a model with shared embeddings the yaml seemed to switch off."""
    proc = hydra_train(BASE_CONFIG, f"task.data={synthetic_data}", f"checkpoint.save_dir={tmp_path}/ckpt",
                       "++model.share_all_embeddings='false'", *TINY, cwd=tmp_path)
    assert_one_error_line(proc, "model.share_all_embeddings (--share-all-embeddings) is a switch")
    assert not (tmp_path / "ckpt" / "checkpoint_last.pt").exists()


def _section(**keys):
    from omegaconf import OmegaConf

    return OmegaConf.create({"_name": "admin_transformer_wmt_en_de", "arch": "admin_transformer_wmt_en_de", **keys})


BAD_VALUES = ((dict(encoder_layers=2.5), "model.encoder_layers (--encoder-layers) expects int, got 2.5"),
              (dict(dropout="high"), "model.dropout (--dropout) expects float, got 'high'"),
              (dict(dropout=True), "model.dropout (--dropout) expects float, got True"),
              (dict(admin_profile_save=False), "model.admin_profile_save (--admin-profile-save) expects str, got False"),
              (dict(share_all_embeddings="false"), "is a switch: give true or false (unquoted)"),
              (dict(admin_omega="vectr"), "model.admin_omega (--admin-omega): invalid choice 'vectr'"))


def test_yaml_values_take_the_option_types_and_choices(monkeypatch):
    """Each value as the command line would give it: typed options convert their text, an int option takes 3.0 but
    not 2.5, switches take only booleans, choices are checked; inside a hydra job each refusal names the key and
    its flag; a checkpoint's section (outside one) is taken as saved."""
    from fairseq_admin.errors import OptionError
    from fairseq_admin.models import hydra_config
    from fairseq_admin.models.residual_transformer import ResidualTransformerModel as Model

    args = hydra_config.namespace_from_config(_section(
        encoder_word_dropout="0.1", encoder_layers="3", decoder_layers=4.0, dropout=1, admin_omega="scalar",
        share_all_embeddings=True, admin_profile_save=123), Model)
    assert (args.encoder_word_dropout, args.encoder_layers, args.decoder_layers, args.dropout) == (0.1, 3, 4, 1.0)
    assert type(args.encoder_layers) is int and type(args.decoder_layers) is int and type(args.dropout) is float
    assert args.admin_omega == "scalar" and args.share_all_embeddings is True and args.admin_profile_save == "123"
    for keys, _ in BAD_VALUES:  # a checkpoint written before these checks still loads
        assert vars(hydra_config.namespace_from_config(_section(**keys), Model)).items() >= keys.items()
    monkeypatch.setattr(hydra_config, "_inside_hydra_job", lambda: True)
    for keys, message in BAD_VALUES:
        with pytest.raises(OptionError, match=re.escape(message)):
            hydra_config.namespace_from_config(_section(**keys), Model)


def test_an_unknown_key_is_refused_only_inside_a_hydra_job(monkeypatch):
    """fairseq-generate loading a hydra checkpoint whose section holds an option this version does not define
    (written by a later one) builds the model, as it does for a command-line checkpoint's Namespace; inside a
    fairseq-hydra-train job the same key is a typo and is refused (test_a_misspelt_model_key_is_one_line)."""
    from fairseq_admin.errors import OptionError
    from fairseq_admin.models import hydra_config
    from fairseq_admin.models.residual_transformer import ResidualTransformerModel as Model

    assert hydra_config.namespace_from_config(_section(a_later_option=1), Model).a_later_option == 1
    monkeypatch.setattr(hydra_config, "_inside_hydra_job", lambda: True)
    with pytest.raises(OptionError, match="model.a_later_option is not an option of admin_transformer_wmt_en_de"):
        hydra_config.namespace_from_config(_section(a_later_option=1), Model)


# ---- one source of truth -------------------------------------------------------------------------------------------
def test_check_names_a_stale_config(tmp_path, capsys, monkeypatch):
    """``--check`` on a folder where one row's file was edited and one is missing names both and exits 1 (on a
    three-row table: the shipped folder itself is compared file by file below)."""
    monkeypatch.setattr(recipes, "SETTINGS", recipes.SETTINGS[:3])
    first, second = recipes.SETTINGS[:2]
    for setting in (first, second):
        (tmp_path / (recipe_configs.config_name(setting) + ".yaml")).write_text(recipe_configs.render(setting))
    (tmp_path / (recipe_configs.config_name(first) + ".yaml")).write_text("# edited\n")
    assert recipe_configs.main(["--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert recipe_configs.config_name(first) in err and recipe_configs.config_name(recipes.SETTINGS[2]) in err


def _hydra_training_config(name, overrides):
    """What fairseq-hydra-train hands to training for ``name`` (fairseq_cli/hydra_train.py: hydra_init, compose,
    add_defaults, resolved)."""
    from hydra import compose, initialize_config_dir
    from fairseq.dataclass.initialize import add_defaults, hydra_init
    from fairseq.dataclass.utils import omegaconf_no_object_check
    from omegaconf import OmegaConf

    hydra_init(name)
    with initialize_config_dir(config_dir=recipe_configs.CONFIG_DIR, version_base="1.1"):  # as fairseq-hydra-train
        cfg = compose(config_name=name, overrides=overrides)
    add_defaults(cfg)
    with omegaconf_no_object_check():
        return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


@pytest.mark.parametrize("setting", recipes.SETTINGS, ids=recipe_configs.config_name)
def test_recipe_config_is_the_train_sh_configuration(setting):
    """The shipped file is what the table generates, and every group of its composed hydra config equals the command
    line's (fairseq's converter of train.sh's argv, one GPU), key by key; the model's options equal after the
    architecture function, as fairseq applies it. (Data and save folders: the same placeholders on both sides.)"""
    name = recipe_configs.config_name(setting)
    shipped = os.path.join(recipe_configs.CONFIG_DIR, name + ".yaml")
    assert open(shipped, encoding="utf-8").read() == recipe_configs.render(setting), \
        f"{shipped} is not what the recipe table generates: python -m fairseq_admin.recipe_configs --write"
    assert_same_training_configuration(name, recipe_configs.recipe_argv(setting))


def assert_same_training_configuration(name, argv):
    """Every group of the shipped config ``name``, composed as fairseq-hydra-train composes it, equals the group
    fairseq's converter makes of the command line ``argv`` (data and save dir as the placeholders), key by key; the
    model's options equal after the architecture function, as fairseq applies it."""
    from fairseq.models import ARCH_CONFIG_REGISTRY
    from omegaconf import OmegaConf

    args, cli = recipe_configs.training_config(argv)  # the render's: cached
    save = recipe_configs.SAVE
    overrides = [f"task.data={recipe_configs.DATA}", f"common.user_dir={args.user_dir}", f"checkpoint.save_dir={save}"]
    hydra = _hydra_training_config(name, overrides)
    for group in cli:
        if group == "model" or cli[group] is None:
            continue
        ours, theirs = OmegaConf.to_container(hydra[group]), OmegaConf.to_container(cli[group])
        differ = {k: (ours.get(k), v) for k, v in theirs.items() if not _same(ours.get(k), v)}
        assert not differ, (group, differ)
    model = argparse.Namespace(**OmegaConf.to_container(hydra.model))
    ARCH_CONFIG_REGISTRY[model._name](model)
    options = recipe_configs._model_options(args.arch)
    differ = {k: (getattr(model, k, None), getattr(args, k, None)) for k in options
              if not _same(getattr(model, k, None), getattr(args, k, None))}
    assert not differ, differ


# ---- the quick start's config --------------------------------------------------------------------------------------
QUICKSTART = "quickstart_admin_18-3"  # the name says which defaults it holds: renamed with them (the test below)


def test_quickstart_config_is_what_the_script_generates():
    """The shipped file is the quick start's own training command (scripts/quickstart.sh --print-train-command, its
    defaults) as the generator renders it; an edited file, or a script whose defaults moved on, fails here."""
    assert recipe_configs.quickstart_config_name() == QUICKSTART
    shipped = os.path.join(recipe_configs.CONFIG_DIR, QUICKSTART + ".yaml")
    assert open(shipped, encoding="utf-8").read() == recipe_configs.render_quickstart(), \
        f"{shipped} is not what scripts/quickstart.sh generates: python -m fairseq_admin.recipe_configs --write"


def test_check_names_a_stale_quickstart_config(tmp_path, capsys, monkeypatch):
    """``--check`` covers the quick start's file too (on an empty recipe table: the quick start's file alone)."""
    monkeypatch.setattr(recipes, "SETTINGS", ())
    path = tmp_path / (QUICKSTART + ".yaml")
    path.write_text(recipe_configs.render_quickstart())
    assert recipe_configs.main(["--check", "--dir", str(tmp_path)]) == 0
    path.write_text(recipe_configs.render_quickstart().replace("warmup_updates: 200", "warmup_updates: 400"))
    assert recipe_configs.main(["--check", "--dir", str(tmp_path)]) == 1
    assert QUICKSTART in capsys.readouterr().err


def test_quickstart_config_is_the_quickstart_configuration():
    """The composed hydra config of the shipped file equals, group by group, the fairseq configuration of the command
    that scripts/quickstart.sh runs (--print-train-command); what the yaml leaves out is the environment (threads)."""
    environment, argv = recipe_configs.quickstart_command()
    assert set(environment) == {"OMP_NUM_THREADS"} and "--stop-time-hours" in argv and "--cpu" in argv
    assert_same_training_configuration(QUICKSTART, argv)
    text = open(os.path.join(recipe_configs.CONFIG_DIR, QUICKSTART + ".yaml"), encoding="utf-8").read()
    assert "stop_time_hours: 0.5" in text and "cpu: true" in text and "OMP_NUM_THREADS" in text


def test_quickstart_config_trains_a_tiny_override(synthetic_data, tmp_path):
    """fairseq-hydra-train on the quick start's config as the docs show it (relative data path, no hydra.run.dir),
    tiny dimensions, 2 updates: Admin's profile and the checkpoints land in ./checkpoints/quickstart_admin_18-3/."""
    from fairseq_admin.checkpoint_safety import load_checkpoint

    (tmp_path / "data-bin").symlink_to(synthetic_data)
    proc = run_cli("fairseq-hydra-train", "--config-dir", recipe_configs.CONFIG_DIR, "--config-name", QUICKSTART,
                   "task.data=data-bin", *TINY, check=False, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    save = tmp_path / "checkpoints" / QUICKSTART
    assert (save / "profile.ratio.init").exists()
    state = load_checkpoint(save / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 2
    assert state["cfg"]["model"]["arch"] == "admin_transformer" and state["cfg"]["model"]["encoder_layers"] == 2
