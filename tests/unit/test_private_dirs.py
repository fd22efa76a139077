"""Directories the service makes for its files are its owner's only, every one of them."""

from __future__ import annotations

import os
from pathlib import Path

from storage.connection import make_private_dirs


def test_every_directory_made_is_private(tmp_path: Path) -> None:
    """`mkdir(parents=True, mode=0o700)` gives the mode to the last directory only: the parents
    it made were 0755 (found from outside)."""
    old = os.umask(0o022)
    try:
        make_private_dirs(tmp_path / "a" / "b" / "c")
        make_private_dirs(tmp_path / "a" / "b" / "c")  # (already there: nothing changes)
    finally:
        os.umask(old)
    for part in ("a", "a/b", "a/b/c"):
        assert os.stat(tmp_path / part).st_mode & 0o777 == 0o700, part
