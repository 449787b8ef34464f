"""``fairseq-hydra-train``: a hydra ``model:`` section read through the same option definitions as the command line.

fairseq builds a legacy (argparse) model such as ours from a hydra config by calling the architecture function on
the ``model`` DictConfig and then ``TransformerModel.build_model`` on it, whose ``TransformerConfig.from_namespace``
copies extra keys only from a Namespace (fairseq/models/transformer/transformer_config.py, ``from_namespace``: it
reads ``vars(args)``, which for a DictConfig holds no option). A plugin option in a yaml (``residual_scheme: admin``)
was therefore lost and the build failed with ``AttributeError: invalid argument residual_scheme``.

Here a hydra ``model`` section becomes exactly the Namespace the command line gives: its keys and values are read
through the options the architecture's ``add_args`` defines (fairseq's transformer options and ours, the one
definition that ``fairseq-train --help`` and ``fairseq-admin-options`` also read), each value as argparse takes it
from the command line; inside a ``fairseq-hydra-train`` job a misspelt key or a value its option refuses is refused
in one line instead of being ignored (a checkpoint's section, read by fairseq-generate, is taken as saved). After
the build, the values the model resolved (``--layer-init``'s default, the scheme's
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
    applied by fairseq).

    Every value goes through its option's type and choices as argparse would take it from the command line (a quoted
    ``'0.3'`` becomes 0.3, ``"false"`` for a switch is refused rather than counted true). Inside a hydra job a value
    its option refuses, and a key that is no option of ``model_cls``, no key its architecture function sets and no
    fairseq private ``_name``-style key, are refused in one line, naming the key. Outside one (fairseq-generate
    loading a checkpoint that fairseq-hydra-train wrote) both are kept as saved, as a command-line checkpoint's
    Namespace keeps an option or value a later version no longer defines."""
    from omegaconf import OmegaConf

    given = OmegaConf.to_container(config, resolve=True)
    actions = model_options(model_cls)
    strict = _inside_hydra_job()
    if strict:
        known = set(actions) | architecture_keys(given.get("_name") or "") | {"arch"}
        unknown = sorted(key for key in given if key not in known and not key.startswith("_"))
        if unknown:
            name = given.get("_name") or "residual_transformer"
            raise OptionError(f"model.{unknown[0]} is not an option of {name} (its options: fairseq-admin-options, "
                              f"and fairseq's transformer options)" + (f"; also unknown: {', '.join(unknown[1:])}"
                                                                       if len(unknown) > 1 else ""))
    for key, value in given.items():
        if key in actions:
            try:
                given[key] = command_line_value(key, value, actions[key])
            except OptionError:
                if strict:
                    raise
    return argparse.Namespace(**given)


# the option types converted here; fairseq's own list-valued types (``eval_str_list``) evaluate their text, so their
# values are left to fairseq, which reads them as it reads its own yaml
_PLAIN_TYPES = (int, float, str)


def command_line_value(key: str, value, action: argparse.Action):
    """``value`` of hydra key ``model.<key>`` as argparse would give it for ``action``: switches take a yaml
    boolean, typed options a value their type accepts, options with choices one of them; otherwise OptionError."""
    flag = action.option_strings[0] if action.option_strings else key
    where = f"model.{key} ({flag})"
    if value is None:
        return None
    if action.nargs == 0:  # store_true / store_false: a yaml boolean, not a string that only looks like one
        if not isinstance(value, bool):
            raise OptionError(f"{where} is a switch: give true or false (unquoted), not {value!r}")
        return value
    kind = action.type or str
    if kind in _PLAIN_TYPES and action.nargs is None:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            if kind is not str or action.type is str:  # an untyped option keeps what fairseq's architecture set
                raise OptionError(f"{where} expects {kind.__name__}, got {value!r}")
        elif kind is str:
            if action.type is str and not isinstance(value, str):
                value = str(value)  # argparse's text: `admin_profile_save: 123` is the file "123"
        else:
            try:
                value = kind(value if isinstance(value, str) or kind is float else _integral(value))
            except (TypeError, ValueError):
                raise OptionError(f"{where} expects {kind.__name__}, got {value!r}") from None
    if action.choices is not None and value not in action.choices:
        raise OptionError(f"{where}: invalid choice {value!r} (choose from "
                          f"{', '.join(repr(choice) for choice in action.choices)})")
    return value


def _integral(number):
    """An int-typed option given a yaml number: 3 and 3.0 are 3; 2.5 is refused (argparse's int('2.5') fails)."""
    if isinstance(number, float) and not number.is_integer():
        raise ValueError(number)
    return int(number)


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
    """True in a ``fairseq-hydra-train`` run: hydra's job config is set, or (the workers fairseq spawns for several
    GPUs, which multiprocessing starts with the parent's ``sys.argv`` but without hydra's state) the command is it."""
    command = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if command in ("fairseq-hydra-train", "hydra_train.py"):
        return True
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
