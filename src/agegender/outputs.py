"""Outputs planned before the work: every file or folder a verb will write is checked up front, so an hour
of prediction never ends in a traceback, and no input is ever overwritten.

`check_output_file` / `check_output_dir` fail as one OutputError line naming the path: an output that is one
of the inputs, a file where a folder is due (or the reverse), a suffix the verb cannot write, a folder that
cannot be made or written (a probe file is created and removed there, which catches /proc, /sys, read-only
mounts and missing permissions alike).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from agegender.errors import UserInputError


class OutputError(UserInputError):
    """An output path a verb cannot write, or must not."""


def _resolved(path: Path) -> Path | None:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # a symlink loop: not one of ours
        return None


def _is_an_input(path: Path, inputs: Iterable[Path]) -> bool:
    """Whether `path` is one of `inputs` (resolved once; a folder run can list thousands of files)."""
    target = _resolved(path)
    return target is not None and any(_resolved(source) == target for source in inputs)


def check_writable_dir(folder: Path, option: str, shown: Path | None = None) -> None:
    """`folder` can be made (or exists) and a file can be created there: probed in its nearest existing
    ancestor, so nothing is made yet (a verb that then fails on a setting leaves no empty folder). Errors name
    `shown` (the file to be written) where given."""
    shown = folder if shown is None else shown
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} {shown}: {existing} is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".agegender-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OutputError(f"{option} {shown}: cannot write in {existing} ({error.strerror or error})") from None


def check_output_file(path: Path, option: str, suffixes: Sequence[str] = (), inputs: Iterable[Path] = ()) -> Path:
    """`path` as a file the verb may (re)place: not a folder, not an input, with one of `suffixes`."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a folder; give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(f"{option} {path}: must end in {' or '.join(suffixes)}")
    if _is_an_input(path, inputs):
        raise OutputError(f"{option} {path}: is one of the inputs; write the output elsewhere")
    check_writable_dir(path.parent, option, path)
    return path


def check_output_dir(path: Path, option: str, inputs: Iterable[Path] = ()) -> Path:
    """`path` as a folder the verb writes into: not an existing file, not an input folder, writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path}: is a file; give a folder")
    if path.is_dir() and _is_an_input(path, inputs):
        raise OutputError(f"{option} {path}: is one of the input folders; write the output elsewhere")
    check_writable_dir(path, option)
    return path
