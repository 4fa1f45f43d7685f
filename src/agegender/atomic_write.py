"""Crash-safe file writes: checkpoints, training state, ONNX files and the decoded-image cache."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from agegender.errors import UserInputError


class WriteError(UserInputError):
    """A file could not be written (a full disk, no permission); the old file, if any, is left as it was."""


def write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Write via a temporary file in the same folder, then rename: a crash never leaves half a file.
    An OSError of the file system (ENOSPC, EACCES, EROFS) becomes one WriteError naming `path`."""
    path = Path(path)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        write(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes files private; ours are meant to be shared
        os.replace(temporary, path)
    except OSError as error:
        raise WriteError(f"{path}: cannot write ({error.strerror or error}); any earlier file is unchanged") from error
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
