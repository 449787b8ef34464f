"""The plugin's user-facing refusals, each printed as one line.

A bad option, profile file or combination is a :class:`OptionError` (a ``ValueError``); a checkpoint that cannot be
used is a :class:`CheckpointError` (its subclasses are in fairseq_admin/checkpoint_safety.py). The ``one_line`` flag
tells the hook that fairseq_admin.checkpoint_safety installs to end the fairseq tool with ``<tool>: error:
<message>`` and exit status 1, not a traceback. This module imports nothing, so a command can catch these before it
has imported torch.
"""


class OptionError(ValueError):
    """A refusal at start-up that says what is wrong and what to do instead."""

    one_line = True


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, said in one line that names the file and what is wrong with it.

    After :func:`fairseq_admin.checkpoint_safety.install`, an uncaught one ends a fairseq tool with ``<tool>: error:
    <message>`` (exit status 1) instead of a traceback; so does any exception whose class sets ``one_line = True``."""

    one_line = True
