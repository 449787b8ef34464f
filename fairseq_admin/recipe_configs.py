"""The recipes as ``fairseq-hydra-train`` configs: one yaml per row of ``scripts/train.sh --list`` and one for the quick
start, generated.

The recipe table (fairseq_admin/recipes.py) stays the one source of truth: each config is what fairseq's own
converter makes of the row's ``fairseq-train`` command (``train.sh --dry-run``, one GPU), written as the values that
differ from fairseq's defaults, so a hydra run and a command-line run of a row train under the same configuration
(tests/test_hydra.py compares them group by group). The shipped files live in ``fairseq_admin/configs/`` (their
folder: ``fairseq-admin-options --config-dir``); ``python -m fairseq_admin.recipe_configs --check`` says whether they
are what the table generates, ``--write`` regenerates them.

    fairseq-hydra-train --config-dir "$(fairseq-admin-options --config-dir)" --config-name en-de_admin_6-6_liu2020 \\
        task.data=data/wmt14_en_de/data-bin common.user_dir="$(fairseq-admin-options --user-dir)"

The quick start's config (``quickstart_admin_18-3.yaml``) is made the same way from the command that
``scripts/quickstart.sh --print-train-command`` prints with the script's defaults: the script stays the one place that
defines it.

``task.data`` and ``common.user_dir`` are left mandatory (``???``) in every file: hydra names them when missing.
The batch is the one-GPU plan (``update_freq`` × ``max_tokens`` = the paper's tokens per update); on G GPUs give
``distributed_training.distributed_world_size=G`` and ``optimization.update_freq=[F/G]``, as train.sh computes.
"""
import argparse
import functools
import os
import re
import shlex
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
DATA, SAVE = "DATA_PLACEHOLDER", "SAVE_PLACEHOLDER"  # in the generated command; replaced in the yaml
HEADER = ("# @package _global_\n"
          "# Generated from {source} by `python -m fairseq_admin.recipe_configs --write`: do not edit.\n")
QUICKSTART_SCRIPT = "scripts/quickstart.sh"


def config_name(setting) -> str:
    return f"{setting.pair}_{setting.scheme}_{setting.layers}_{setting.source}"


def training_config(argv: Sequence[str]):
    """(Namespace, FairseqConfig) that fairseq-train builds from ``argv`` (fairseq's parser and converter); computed
    once per argv (about a second each: every config needs two), so treat the result as read-only."""
    return _training_config(tuple(argv))


@functools.lru_cache(maxsize=None)
def _training_config(argv):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    args = options.parse_args_and_arch(options.get_training_parser(), input_args=list(argv))
    return args, convert_namespace_to_omegaconf(args)


def _interpolated(group: str, name: Optional[str]) -> set:
    """Fields of a config group that fairseq fills by interpolation from another group (the optimizer's ``lr`` from
    ``optimization.lr``, ``distributed_training.fp16`` from ``common.fp16``): written once, where they live."""
    from omegaconf import OmegaConf
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.registry import REGISTRIES
    from fairseq.tasks import TASK_DATACLASS_REGISTRY

    if group in REGISTRIES or group == "task":
        registry = TASK_DATACLASS_REGISTRY if group == "task" else REGISTRIES[group]["dataclass_registry"]
        if name not in registry:
            return set()
        node = OmegaConf.structured(registry[name])
    else:
        node = OmegaConf.structured(FairseqConfig)[group]
    return {key for key in node if OmegaConf.is_interpolation(node, key)}


def hydra_config(argv: Sequence[str]) -> Dict[str, dict]:
    """The groups and values of ``argv``'s training configuration that differ from fairseq's defaults for the same
    components (task, architecture, optimizer, scheduler, criterion), the model as its flat option names."""
    from omegaconf import OmegaConf

    args, cfg = training_config(argv)
    components = [argv[0], "--user-dir", args.user_dir, "--task", args.task, "--arch", args.arch, "--optimizer",
                  args.optimizer, "--lr-scheduler", args.lr_scheduler, "--criterion", args.criterion]
    base_args, base = training_config(components)
    out: Dict[str, dict] = {}
    for group in cfg:
        if group == "model":
            continue
        values, defaults = cfg[group], base[group]
        if values is None or not OmegaConf.is_config(values):
            continue
        values, defaults = OmegaConf.to_container(values), OmegaConf.to_container(defaults)
        skip = _interpolated(group, values.get("_name"))
        changed = {key: value for key, value in values.items()
                   if key not in skip and key != "_name" and defaults.get(key) != value}
        if values.get("_name") is not None:  # a component (task, optimizer, scoring...): hydra's default is none
            changed = {"_name": values["_name"], **changed}
        if changed:
            out[group] = changed
    model = {"_name": args.arch, "encoder_layers": args.encoder_layers, "decoder_layers": args.decoder_layers}
    model.update({key: value for key, value in vars(args).items()
                  if key in _model_options(args.arch) and getattr(base_args, key, None) != value})
    out["model"] = _without_derived(args.arch, model, _given_options(args.arch, argv))
    return out


def _without_derived(arch: str, model: dict, given: set) -> dict:
    """``model`` less the options that ``argv`` did not give and the architecture function derives from the others
    (the quick start's ``decoder_output_dim`` 128 from ``decoder_embed_dim``): written out, it would stay 128 when a
    hydra override changes the dimension it follows, as the command line's would not."""
    from fairseq.models import ARCH_CONFIG_REGISTRY

    for key in [k for k in model if k not in given and k not in ("_name", "encoder_layers", "decoder_layers")]:
        without = {k: v for k, v in model.items() if k != key}
        derived = argparse.Namespace(**without)
        ARCH_CONFIG_REGISTRY[arch](derived)
        if getattr(derived, key, None) == model[key]:
            model = without
    return model


def _given_options(arch: str, argv: Sequence[str]) -> set:
    """The destinations of the architecture's options that ``argv`` names (``--flag`` or ``--flag=value``)."""
    from fairseq.models import ARCH_MODEL_REGISTRY
    from fairseq_admin.models.hydra_config import model_options

    flags = {word.split("=", 1)[0] for word in argv if word.startswith("--")}
    return {dest for dest, action in model_options(ARCH_MODEL_REGISTRY[arch]).items()
            if flags & set(action.option_strings)}


def _model_options(arch: str) -> set:
    from fairseq.models import ARCH_MODEL_REGISTRY

    parser = argparse.ArgumentParser(add_help=False)
    ARCH_MODEL_REGISTRY[arch].add_args(parser)
    return {action.dest for action in parser._actions}


def recipe_argv(setting) -> List[str]:
    """The fairseq-train arguments of ``train.sh --dry-run`` for ``setting`` on one GPU (data and save dir as
    placeholders)."""
    from fairseq_admin import recipes

    argv, _plan = recipes.build_train_command(setting, DATA, SAVE, gpus=1)
    return argv[argv.index(DATA):]


def quickstart_command(*options: str) -> Tuple[Dict[str, str], List[str]]:
    """(environment, fairseq-train arguments) of the quick start's main run, as ``scripts/quickstart.sh
    --print-train-command OPTIONS`` prints them (the script defines the command; data and save dir as placeholders)."""
    from fairseq_admin.cli.shipped import shipped_path

    proc = subprocess.run(["bash", shipped_path(QUICKSTART_SCRIPT), "--print-train-command", *options],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{QUICKSTART_SCRIPT} --print-train-command failed: {proc.stderr.strip()}")
    words = shlex.split(proc.stdout)  # bash's printf %q quoting, as the script prints it
    environment = {}
    while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # OMP_NUM_THREADS=N: not a fairseq option
        name, value = words.pop(0).split("=", 1)
        environment[name] = value
    if not words or words[0] != "fairseq-train":
        raise RuntimeError(f"{QUICKSTART_SCRIPT} --print-train-command printed no fairseq-train command: {proc.stdout!r}")
    argv = words[1:]
    data, save = argv[0], argv[argv.index("--save-dir") + 1]
    return environment, [DATA if word == data else SAVE + word[len(save):] if word.startswith(save) else word
                         for word in argv]


def quickstart_config_name(argv: Optional[Sequence[str]] = None) -> str:
    """quickstart_SCHEME_LAYERS of the script's defaults, read from its command ``argv`` (default: the script's
    printed one), e.g. quickstart_admin_18-3."""
    if argv is None:
        _environment, argv = quickstart_command()
    value = {flag: argv[argv.index(flag) + 1] for flag in ("--arch", "--encoder-layers", "--decoder-layers")}
    scheme = value["--arch"][:-len("_transformer")] if value["--arch"].endswith("_transformer") else value["--arch"]
    return f"quickstart_{scheme}_{value['--encoder-layers']}-{value['--decoder-layers']}"


def render(setting) -> str:
    """The yaml text of ``setting``'s config."""
    title = f"# {setting.pair} {setting.scheme} {setting.layers}, {setting.source}: scripts/train.sh --pair " \
            f"{setting.pair} --scheme {setting.scheme} --layers {setting.layers} --source {setting.source}\n"
    return _render(recipe_argv(setting), config_name(setting), HEADER.format(source="fairseq_admin/recipes.py") + title)


def render_quickstart() -> str:
    """The yaml text of the quick start's config: ``scripts/quickstart.sh --print-train-command`` with its defaults."""
    environment, argv = quickstart_command()
    header = HEADER.format(source=QUICKSTART_SCRIPT) + (
        f"# The quick start's training run for fairseq-hydra-train: `{QUICKSTART_SCRIPT} --print-train-command` with\n"
        f"# the script's defaults. Not carried: the environment the script sets ({', '.join(sorted(environment))}:\n"
        "# torch's CPU threads, its --threads; set it yourself), the data preparation (fairseq-admin-data-prep\n"
        "# multi30k), the check that skips a finished run (fairseq-train trains one more update on one) and the\n"
        "# evaluation (scripts/evaluate.sh --choose-on-valid).\n")
    return _render(argv, quickstart_config_name(argv), header)


def _render(argv: Sequence[str], name: str, header: str) -> str:
    """The yaml text of the config ``name`` for the fairseq-train arguments ``argv`` (data and save dir as the
    placeholders), under ``header``."""
    import yaml

    config = hydra_config(argv)
    config["common"]["user_dir"] = "???"
    config["task"]["data"] = "???"
    save_dir = f"checkpoints/{name}"
    config["checkpoint"] = {**config.get("checkpoint", {}), "save_dir": save_dir}
    for group in config.values():  # Admin's profile path follows the save dir, as in train.sh
        for key, value in list(group.items()):
            if isinstance(value, str) and SAVE in value:
                group[key] = value.replace(SAVE, "${checkpoint.save_dir}")
    # always written: fairseq's default is the machine's GPU count (dataclass/configs.py), not train.sh's one GPU
    config["distributed_training"] = {**config.get("distributed_training", {}), "distributed_world_size": 1}
    # relative paths (data, save dir) from where the command runs, and a second run resumes: hydra 1.3 would
    # otherwise run the job in a new outputs/<date>/<time>/ (fairseq's own config.yaml sets the same)
    config["hydra"] = {"run": {"dir": "."}, "job": {"chdir": False}}
    order = ["common", "task", "model", "criterion", "optimizer", "lr_scheduler", "optimization", "dataset",
             "distributed_training", "checkpoint", "hydra"]
    ordered = {g: config[g] for g in order if g in config}
    ordered.update({g: v for g, v in config.items() if g not in ordered})
    return header + yaml.safe_dump(ordered, sort_keys=False, width=118)


def expected_files() -> Dict[str, str]:
    """{file name: text} of every config the recipe table and the quick start generate."""
    from fairseq_admin import recipes

    files = {config_name(s) + ".yaml": render(s) for s in recipes.SETTINGS}
    files[quickstart_config_name() + ".yaml"] = render_quickstart()
    return files


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin.recipe_configs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help=f"(re)generate the configs in --dir")
    action.add_argument("--check", action="store_true",
                        help="exit 1 if a config in --dir differs from the table or the quick start")
    parser.add_argument("--dir", default=CONFIG_DIR, help=f"the configs' folder (default {CONFIG_DIR})")
    args = parser.parse_args(argv)
    import fairseq_admin

    fairseq_admin.register()
    expected = expected_files()
    if args.check:
        present = {f for f in os.listdir(args.dir) if f.endswith(".yaml")} if os.path.isdir(args.dir) else set()
        stale = sorted(f for f, text in expected.items()
                       if f not in present or open(os.path.join(args.dir, f), encoding="utf-8").read() != text)
        extra = sorted(present - set(expected))
        if stale or extra:
            print(f"recipe_configs: error: {len(stale)} config(s) differ from the recipe table and the quick start "
                  f"({', '.join(stale)})" + (f"; not generated: {', '.join(extra)}" if extra else "")
                  + "; run python -m fairseq_admin.recipe_configs --write", file=sys.stderr)
            return 1
        print(f"{len(expected)} configs in {args.dir} match the recipe table and the quick start")
        return 0
    os.makedirs(args.dir, exist_ok=True)
    for name in sorted(set(os.listdir(args.dir)) - set(expected)):
        if name.endswith(".yaml"):  # a row removed from the table (or a quick start renamed)
            os.remove(os.path.join(args.dir, name))
    for name, text in expected.items():
        with open(os.path.join(args.dir, name), "w", encoding="utf-8") as f:
            f.write(text)
    print(f"wrote {len(expected)} configs to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
