"""The plugin's user-facing refusals: one exception class, printed as one line.

A bad option, profile file or combination is a :class:`OptionError` (a ``ValueError``). Its ``one_line`` flag tells
the hook that fairseq_admin.checkpoint_safety installs to end the fairseq tool with ``<tool>: error: <message>`` and
exit status 1, not a traceback.
"""


class OptionError(ValueError):
    """A refusal at start-up that says what is wrong and what to do instead."""

    one_line = True
