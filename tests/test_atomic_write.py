from __future__ import annotations

import stat
from pathlib import Path

from agegender.atomic_write import write_atomically


def test_replaces_the_file_whole_and_leaves_it_readable_by_others(tmp_path):
    path = tmp_path / "sub" / "file.bin"
    write_atomically(path, lambda temporary: Path(temporary).write_bytes(b"old"))
    write_atomically(path, lambda temporary: Path(temporary).write_bytes(b"new"))
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's private 0o600
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]
