"""``fairseq-hydra-train``: a hydra ``model:`` section read through the same option definitions as the command line.

fairseq builds a legacy (argparse) model such as ours from a hydra config by calling the architecture function on
the ``model`` DictConfig and then ``TransformerModel.build_model`` on it, whose ``TransformerConfig.from_namespace``
copies extra keys only from a Namespace (fairseq/models/transformer/transformer_config.py, ``from_namespace``: it
reads ``vars(args)``, which for a DictConfig holds no option). A plugin option in a yaml (``residual_scheme: admin``)
was therefore lost and the build failed with ``AttributeError: invalid argument residual_scheme``.

Here a hydra ``model`` section becomes exactly the Namespace the command line gives: its keys are checked against the
options the architecture's ``add_args`` defines (fairseq's transformer options and ours, the one definition that
``fairseq-train --help`` and ``fairseq-admin-options`` also read), so a misspelt key is refused in one line instead of
being ignored; after the build, the values the model resolved (``--layer-init``'s default, the scheme's
``residual_scheme``) are written back into the section, so the checkpoint records them as a command-line run does.

Why the model keeps fairseq's argparse route rather than ``register_model(..., dataclass=...)``: fairseq gives a
model class with a dataclass the dataclass route for every one of its architectures, on the command line too
(fairseq/dataclass/utils.py ``override_module_args``: ``model=<name>``), so every checkpoint of every scheme would
change its saved configuration from the command line's Namespace to a dict of the dataclass's fields, and the
schemes' bit-identity with 0.5.0 checkpoints (tests/test_bit_identity.py) would rest on fairseq's conversion of
each field. fairseq's own ``transformer`` architectures take the same argparse route under hydra.
"""
import argparse
import contextlib
import os
import sys
from typing import Dict

from fairseq_admin.errors import OptionError


def is_hydra_config(args) -> bool:
    """True for an omegaconf DictConfig (a hydra ``model`` section or a checkpoint's saved one)."""
    from omegaconf import OmegaConf

    return OmegaConf.is_config(args)


def model_options(model_cls) -> Dict[str, argparse.Action]:
    """{dest: action} of every option ``model_cls.add_args`` defines (fairseq's and the plugin's)."""
    parser = argparse.ArgumentParser(add_help=False)
    model_cls.add_args(parser)
    return {action.dest: action for action in parser._actions}


def architecture_keys(name: str):
    """The keys architecture ``name``'s function sets on an empty Namespace (fairseq's ``base_architecture`` also sets
    a few that are no command-line option, such as ``decoder_input_dim``)."""
    from fairseq.models import ARCH_CONFIG_REGISTRY

    if name not in ARCH_CONFIG_REGISTRY:
        return set()
    namespace = argparse.Namespace()
    ARCH_CONFIG_REGISTRY[name](namespace)
    return set(vars(namespace))


def namespace_from_config(config, model_cls) -> argparse.Namespace:
    """The Namespace the command line would give for a hydra ``model`` section (its architecture function already
    applied by fairseq): every key must be an option of ``model_cls``, a key its architecture function sets, or one
    of fairseq's private ``_name``-style keys; a key that is none of these is refused in one line, naming it."""
    from omegaconf import OmegaConf

    given = OmegaConf.to_container(config, resolve=True)
    options = set(model_options(model_cls)) | architecture_keys(given.get("_name") or "") | {"arch"}
    unknown = sorted(key for key in given if key not in options and not key.startswith("_"))
    if unknown:
        name = given.get("_name") or "residual_transformer"
        raise OptionError(f"model.{unknown[0]} is not an option of {name} (its options: fairseq-admin-options, and "
                          f"fairseq's transformer options)" + (f"; also unknown: {', '.join(unknown[1:])}"
                                                               if len(unknown) > 1 else ""))
    return argparse.Namespace(**given)


@contextlib.contextmanager
def one_line_errors_under_hydra():
    """Inside a ``fairseq-hydra-train`` job, end a user-facing refusal (an exception whose class sets ``one_line``,
    fairseq_admin/errors.py) with ``<tool>: error: <message>`` and exit status 1: hydra would print it as a
    shortened traceback (hydra/_internal/utils.py, ``run_and_report``), and the plugin's excepthook never sees it.
    Outside hydra (a checkpoint written by it, loaded by fairseq-generate) the exception propagates as usual."""
    try:
        yield
    except Exception as error:
        if getattr(type(error), "one_line", False) is not True or not _inside_hydra_job():
            raise
        tool = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "fairseq-hydra-train"
        print(f"{tool}: error: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def _inside_hydra_job() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:
        return False
    return HydraConfig.initialized()


def write_back(config, args: argparse.Namespace, model_cls) -> None:
    """Record in the hydra ``model`` section every option value the build resolved or added, as the command line's
    Namespace records them (the checkpoint saves this section)."""
    from omegaconf import open_dict

    options = model_options(model_cls)
    with open_dict(config):
        for key, value in vars(args).items():
            if key in options and (key not in config or config[key] != value):
                config[key] = value
        if config.get("arch") is None and config.get("_name"):  # what export, average and resume checks read
            config["arch"] = config["_name"]
