"""Where a tool writes: checked before any work, never onto an input, replaced whole or not at all.

Every writer of the plugin (``fairseq-admin-export``, ``-average``, ``-evaluate``, ``-prepare``, ``-diagnose``, the
quick start's report) passes each file it will write to :func:`check_output` (or :func:`check_outputs`) before it reads
or computes anything, and writes it with :func:`atomic_write`. Why each rule exists:

* **not a directory**: ``open(DIR, "w")`` fails with ``IsADirectoryError`` only after the work, as a traceback.
* **not an input, compared as files**: ``os.path.samefile`` (symbolic links followed, hard links seen) where both
  exist, ``os.path.realpath`` otherwise. Comparing ``abspath`` strings misses ``link/model.pt`` when ``link`` is a
  symbolic link to the input's directory; and a writer that opens its output before reading its input (``clean``,
  ``spm-encode``) empties the input it was about to read.
* **not a name fairseq-train writes or resumes from** (``checkpoint_last.pt``, ``checkpoint_best.pt``,
  ``checkpoint<E>.pt``, ``checkpoint_<E>_<U>.pt``, ``checkpoint.best_<metric>_<value>.pt``, with any suffix):
  written into a save directory, the next ``fairseq-train`` resumes from it (an average without optimizer state, or
  an exported stock ``transformer`` that the plugin's resume refuses), or replaces it, losing the file.
* **writable, tried for real**: a temporary file is created in the target directory and removed again.
  ``os.access`` reads permission bits, which root bypasses, and knows nothing of an immutable directory
  (``chattr +i``), of ``/proc`` or of a full quota: only creating a file tells.
* **missing parent directories are created** (``mkdir -p``): ``--out export/model.pt`` on a fresh tree works, as the
  README's example expects. A parent that exists as a regular file is refused.
* **an existing output that is not a regular file** (a device, a FIFO) is refused: the rename below would replace the
  node itself (``/dev/null`` as root).

:func:`atomic_write` writes into a temporary file in the output's own directory (a rename is atomic only within one
file system), flushes and ``fsync``s it, then ``os.replace``s it onto the output, so a kill, a full disk or an error
half-way leaves the previous file as it was and no temporary file behind. A symbolic link at the output path is
written through (its target is replaced), as ``open(path, "w")`` would.

This module imports only the standard library: ``fairseq_admin/cli/prepare.py`` loads it by path, without importing
the package (which imports fairseq).
"""
import contextlib
import os
import re
import stat
import tempfile
from typing import Iterable, Iterator, Optional, Sequence, Tuple, Union

PathLike = Union[str, "os.PathLike[str]"]

# what fairseq-train writes and resumes from (fairseq/checkpoint_utils.py save_checkpoint: checkpoint{epoch}{suffix}.pt,
# checkpoint_{epoch}_{updates}{suffix}.pt, checkpoint_best{suffix}.pt, checkpoint.best_{metric}_{value}{suffix}.pt,
# checkpoint_last{suffix}.pt)
FAIRSEQ_CHECKPOINT_NAME = re.compile(r"^checkpoint(_last|_best|\d+|_\d+_\d+|\.best_).*\.pt$")


class OutputPathError(ValueError):
    """An output path refused before any work. ``one_line``: fairseq_admin's hooks print it as one ``error:`` line
    (the protocol of :class:`fairseq_admin.errors.OptionError`, not imported here: see the module docstring)."""

    one_line = True


def _same_file(a: str, b: str) -> bool:
    """``a`` and ``b`` are the same file: the same inode where both exist, else the same resolved path."""
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output(path: PathLike, inputs: Iterable[Optional[PathLike]] = (), what: str = "--out") -> str:
    """Refuse, before any work, an output ``path`` that :func:`atomic_write` could not write or that would destroy
    something (the rules and why: module docstring); create its missing parent directories. ``inputs``: every file
    the tool reads (None entries and directories are skipped). ``what`` names the option in the message
    (``<what> <path>: ...``). Returns the path that will be written: ``path`` with symbolic links resolved."""
    path = os.fspath(path)
    if not path:
        raise OutputPathError(f"{what}: empty path")
    if os.path.isdir(path) or path.endswith(os.sep):
        raise OutputPathError(f"{what} {path} is a directory; give the name of a file to write")
    for source in inputs:
        if source is None:
            continue
        source = os.fspath(source)
        if os.path.isdir(source):
            continue
        if _same_file(path, source):
            shown = "" if os.path.abspath(source) == os.path.abspath(path) else f" ({source})"
            raise OutputPathError(f"{what} {path} is one of the inputs{shown}: it would be overwritten; "
                                  "choose another name")
    target = os.path.realpath(path)
    for name in {os.path.basename(path), os.path.basename(target)}:
        if FAIRSEQ_CHECKPOINT_NAME.match(name):
            raise OutputPathError(
                f"{what} {path}: fairseq-train writes and resumes from files named like this (checkpoint_last.pt, "
                f"checkpoint_best.pt, checkpoint<E>.pt, checkpoint_<E>_<U>.pt); a resumed run would start from this "
                f"file, or overwrite it. Choose another name, e.g. {os.path.join(os.path.dirname(path), 'model.pt')}")
    if os.path.lexists(target) and not stat.S_ISREG(os.stat(target).st_mode):
        raise OutputPathError(f"{what} {path} exists and is not a regular file")
    _check_directory(os.path.dirname(target), f"{what} {path}")
    return target


def check_outputs(outputs: Sequence[Tuple[str, Optional[PathLike]]],
                  inputs: Iterable[Optional[PathLike]] = ()) -> None:
    """:func:`check_output` for each ``(what, path)`` of ``outputs`` (None paths skipped), and no two outputs the
    same file (the second would overwrite the first)."""
    inputs = list(inputs)
    written = []
    for what, path in outputs:
        if path is None:
            continue
        target = check_output(path, inputs, what)
        for other_what, other_path, other_target in written:
            if target == other_target:
                raise OutputPathError(f"{what} {os.fspath(path)} is the same file as {other_what} "
                                      f"{os.fspath(other_path)}: one would overwrite the other")
        written.append((what, path, target))


def check_output_directory(directory: PathLike, what: str) -> str:
    """Refuse, before any work, a ``directory`` to write files into that exists as something else or in which no
    file can be created; create it if missing. Returns its absolute path."""
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise OutputPathError(f"{what} {directory} is a file, not a directory")
    _check_directory(directory, f"{what} {directory}")
    return directory


def check_replaced_directory(directory: PathLike, inputs: Iterable[Optional[PathLike]], what: str) -> str:
    """Refuse, before any work, a ``directory`` that the tool deletes and writes anew (CTranslate2's converter with
    ``force``: ``shutil.rmtree``) when it is, or holds, one of ``inputs`` (through symlinks). Returns its real path."""
    real = os.path.realpath(os.fspath(directory))
    for path in inputs:
        if path is None:
            continue
        held = os.path.realpath(os.fspath(path))
        if held == real or held.startswith(real.rstrip(os.sep) + os.sep):
            raise OutputPathError(f"{what} {directory} would be deleted and rewritten, and it holds the input {path}; "
                                  "choose another directory")
    return real


def _check_directory(directory: str, label: str) -> None:
    """``directory`` exists (created with its parents if missing) and a file can be created in it (tried)."""
    directory = directory or "."
    existing = directory
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputPathError(f"{label}: {existing} is not a directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"{label}: cannot create the directory {directory} ({exc.strerror})") from None
    try:  # os.access would say yes to root in a directory where creating a file fails (see the module docstring)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=directory)
    except OSError as exc:
        raise OutputPathError(f"{label}: cannot create a file in {directory} ({exc.strerror})") from None
    os.close(fd)
    os.remove(probe)


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", encoding: Optional[str] = "utf-8",
                 newline: Optional[str] = "\n") -> Iterator:
    """A file object on a temporary file beside ``path`` (``mode`` ``"w"`` or ``"wb"``; ``encoding``/``newline``
    for text). On a clean exit it gets the mode ``path`` had (else what ``open`` would give) and
    :func:`move_into_place` makes it ``path``; on any exception it is removed and ``path`` is untouched."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', not {mode!r}")
    target = os.path.realpath(os.fspath(path))
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        kept = stat.S_IMODE(os.stat(target).st_mode) if os.path.isfile(target) else 0o666 & ~_umask()
        os.chmod(tmp, kept)  # mkstemp's 0600 -> the previous file's mode, or what a plain open() gives
        text = {} if "b" in mode else {"encoding": encoding, "newline": newline}
        with os.fdopen(fd, mode, **text) as f:
            fd = None  # the file object owns it now
            yield f
        move_into_place(tmp, target)
    except BaseException:
        if fd is not None:
            os.close(fd)
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def move_into_place(written: PathLike, path: PathLike) -> None:
    """Make the complete file ``written`` (in ``path``'s directory: a rename does not cross file systems) the file
    ``path``: ``fsync`` it, ``os.replace`` it onto ``path`` (through a symbolic link), ``fsync`` the directory. Without
    the first fsync a crash soon after the rename can leave ``path`` empty on ext4/xfs; without the last, the old
    file. For files a library writes itself (sentencepiece's model); :func:`atomic_write` ends with it."""
    target = os.path.realpath(os.fspath(path))
    fd = os.open(os.fspath(written), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(written, target)
    try:  # some file systems cannot fsync a directory; that costs only durability
        dir_fd = os.open(os.path.dirname(target), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
