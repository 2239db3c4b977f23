"""Files Hotline keeps under its data directory (messages' and calls' recordings): paths
stored relative to it, resolved strictly inside it, written whole or not at all.

Blocking file I/O: called off the event loop (`asyncio.to_thread`) or from the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def resolve(data_dir: Path, relative: str) -> Path | None:
    """`relative` inside `data_dir`, or None if it would lead anywhere else."""
    if not relative or Path(relative).is_absolute():
        return None
    root = data_dir.resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) and path != root else None


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Create or replace `path` with what `write` writes: a reader (or a crash) sees the
    old file or the whole new one, never a part. Raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as out:
            write(out)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
