"""Writing files and folders so that a crash never leaves a half-written one: everything is written
under a temporary name beside the destination (``.<name>.tmp-<pid>``, same file system) and renamed
onto it at the end. A folder that is replaced is first moved aside, so the old one stays whole until
the new one is in place."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def temp_path(final: Path, tag: str = "tmp") -> Path:
    """``final``'s temporary sibling (``.<name>.<tag>-<pid>``)."""
    final = Path(final)
    return final.parent / f".{final.name}.{tag}-{os.getpid()}"


def replace_dir(tmp: Path, final: Path) -> None:
    """Put folder ``tmp`` at ``final`` (one rename), replacing an old ``final``: moved aside, then removed."""
    tmp, final = Path(tmp), Path(final)
    old = temp_path(final, "old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final``; when the block ends it replaces ``final``, and
    when the block raises it is removed, so ``final`` is the old folder or the new one, never half."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` to write; when the block ends it replaces ``final``,
    and when the block raises it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON with sorted keys (and a final newline) to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def copy_dir(src: Path, final: Path) -> None:
    """Copy folder ``src`` to ``final`` atomically (replacing an old ``final``)."""
    with atomic_dir(final) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


__all__ = ["atomic_dir", "atomic_file", "copy_dir", "replace_dir", "temp_path", "write_json", "write_text"]
