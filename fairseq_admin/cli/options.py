"""``fairseq-admin-options``: every command-line option the plugin adds to fairseq, with its help and default.

fairseq's ``--help`` never lists an architecture's options, so this command builds them from the parsers themselves
(nothing is written twice, a new option appears here by itself):

* the model ``residual_transformer``: the options its ``add_args`` adds beyond fairseq's ``TransformerModel``, split
  into those every scheme shares and each scheme's own (``ResidualScheme.option_names``);
* every other fairseq component the package registers (tasks, optimizers, criterions, ...): the options of its
  ``add_args`` beyond those of the fairseq class it extends.

``fairseq-admin-options --scheme admin`` prints the shared options and Admin's only; ``fairseq-admin-options
--user-dir`` prints the installed package's folder, for ``fairseq-train --user-dir "$(fairseq-admin-options
--user-dir)"`` from any directory; ``--config-dir`` the folder of the shipped ``fairseq-hydra-train`` configs.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Iterator, List, Optional, Sequence, Tuple

import fairseq_admin

Section = Tuple[str, List[argparse.Action]]


def _actions(add_args) -> List[argparse.Action]:
    """The actions ``add_args(parser)`` adds to an empty parser (help excluded)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_args(parser)
    return list(parser._actions)


def _added(component: type, base: Optional[type]) -> List[argparse.Action]:
    """The options of ``component.add_args`` that ``base.add_args`` does not have."""
    inherited = {a.dest for a in _actions(base.add_args)} if base is not None else set()
    return [a for a in _actions(component.add_args) if a.dest not in inherited]


def _fairseq_base(component: type) -> Optional[type]:
    """The nearest class ``component`` extends that is not the plugin's own (the fairseq class it builds on)."""
    for base in component.__mro__[1:]:
        if not base.__module__.startswith("fairseq_admin") and hasattr(base, "add_args"):
            return base
    return None


def _plugin_components() -> Iterator[Tuple[str, str, type]]:
    """(kind, registered name, class) of every model, task and other fairseq component the package registers."""
    from fairseq.models import MODEL_REGISTRY
    from fairseq.registry import REGISTRIES
    from fairseq.tasks import TASK_REGISTRY

    registries = [("model", MODEL_REGISTRY), ("task", TASK_REGISTRY)]
    registries += [(kind, entry["registry"]) for kind, entry in REGISTRIES.items()]
    for kind, registry in registries:
        for name, cls in sorted(registry.items()):
            if cls.__module__.startswith("fairseq_admin"):
                yield kind, name, cls


def sections(scheme: Optional[str] = None) -> List[Section]:
    """(title, options) of everything the plugin adds; with ``scheme``, only that scheme's and the shared ones."""
    from fairseq_admin.models.residual_transformer import ResidualTransformerModel

    result: List[Section] = []
    for kind, name, cls in _plugin_components():
        options = _added(cls, _fairseq_base(cls))
        if cls is ResidualTransformerModel:
            result += _model_sections(name, options, scheme)
        else:
            result.append((f"{kind} {name} (--{kind.replace('_', '-')} {name})", options))
    return result


def _model_sections(name: str, options: List[argparse.Action], scheme: Optional[str]) -> List[Section]:
    """The model's options: those every scheme shares, then each scheme's own (or ``scheme``'s only)."""
    from fairseq_admin.schemes import SCHEMES

    own = {s.name: set(s.option_names().values()) for s in SCHEMES.values()}
    of_a_scheme = set().union(*own.values())
    result = [(f"model {name} (--arch <scheme>_transformer..., e.g. admin_transformer_wmt_en_de), every scheme",
               [a for a in options if a.dest not in of_a_scheme])]
    for s in SCHEMES.values():
        if scheme in (None, s.name):
            result.append((f"scheme {s.name} (--arch {s.name}_transformer..., or --residual-scheme {s.name})",
                           [a for a in options if a.dest in own[s.name]]))
    return result


def _arch_defaults() -> dict:
    """The values the base architecture ``residual_transformer`` sets when an option is not given."""
    from fairseq.models import ARCH_CONFIG_REGISTRY

    args = argparse.Namespace()
    ARCH_CONFIG_REGISTRY["residual_transformer"](args)
    return vars(args)


def _default(action: argparse.Action, arch_defaults: dict) -> str:
    """'' when the help already states the default the code applies (the parser's default is None then)."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return " [a flag: off unless given]"
    if action.default is not None:
        return f" [default: {action.default!r}]" if isinstance(action.default, str) else f" [default: {action.default}]"
    if action.dest in arch_defaults:
        return f" [default: set by --arch; {arch_defaults[action.dest]!r} for --arch residual_transformer]"
    return "" if "default" in (action.help or "").lower() else " [default: not set]"


def format_option(action: argparse.Action, arch_defaults: dict, width: int = 100) -> str:
    name = ", ".join(action.option_strings)
    if action.choices:
        name += " {" + ",".join(str(c) for c in action.choices) + "}"
    elif action.nargs != 0:
        name += " " + (action.metavar or action.dest.upper())
    text = (action.help or "") + _default(action, arch_defaults)
    return f"  {name}\n" + textwrap.fill(text.strip(), width, initial_indent=" " * 6, subsequent_indent=" " * 6)


def render(scheme: Optional[str] = None) -> str:
    fairseq_admin.register()  # the listing reads fairseq's registries (fairseq_admin/__init__.py: not at import)
    lines = [f"fairseq_admin {fairseq_admin.__version__}: the options it adds to fairseq's "
             f"(fairseq-train ... --user-dir {user_dir()})"]
    arch_defaults = _arch_defaults()
    for title, options in sections(scheme):
        lines += ["", title + ":"] + ([format_option(a, arch_defaults) for a in options] or ["  (none of its own)"])
    return "\n".join(lines)


def user_dir() -> str:
    """The installed package's folder: what ``--user-dir`` takes."""
    return os.path.dirname(os.path.abspath(fairseq_admin.__file__))


def config_dir() -> str:
    """The shipped ``fairseq-hydra-train`` configs' folder: one yaml per recipe row and one for the quick start
    (fairseq_admin/recipe_configs.py)."""
    return os.path.join(user_dir(), "configs")


def cli_main(argv: Optional[Sequence[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv in (["--user-dir"], ["--config-dir"]):  # paths: answered without the parser below, which imports torch
        print(user_dir() if argv == ["--user-dir"] else config_dir())
        return
    from fairseq_admin.schemes import SCHEMES

    parser = argparse.ArgumentParser(
        prog="fairseq-admin-options",
        description="Print every option fairseq_admin adds to fairseq (model, schemes, tasks, optimizers), with its "
                    "help and default, or the folder to pass to --user-dir.")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--scheme", choices=tuple(SCHEMES), help="only this scheme's options and the shared ones")
    what.add_argument("--user-dir", action="store_true",
                      help="print the installed package's folder, e.g. fairseq-train --user-dir "
                           "\"$(fairseq-admin-options --user-dir)\"")
    what.add_argument("--config-dir", action="store_true",
                      help="print the folder of the shipped fairseq-hydra-train configs (one per recipe row), e.g. "
                           "fairseq-hydra-train --config-dir \"$(fairseq-admin-options --config-dir)\" --config-name "
                           "en-de_admin_6-6_liu2020 task.data=DIR common.user_dir=\"$(fairseq-admin-options --user-dir)\"")
    args = parser.parse_args(argv)
    print(user_dir() if args.user_dir else config_dir() if args.config_dir else render(args.scheme))


if __name__ == "__main__":
    cli_main(sys.argv[1:])
