"""Result files written all or nothing: an interrupted job never leaves a half-written one behind."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """`write` into a temporary file beside `path`, then rename it over `path` (atomic on POSIX)."""
    temporary = path.with_name(f".{path.name}.tmp{path.suffix}")  # same suffix: writers that pick a format by it
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """`path.write_text(text)`, all or nothing."""
    write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
