"""Durable file writes: write a temporary file, fsync it, rename it over the target, fsync the directory.

A crash at any point leaves either the old file or the new one, never a torn one, and once
these functions return the new file survives a power cut. Every file a resumed run, a server
restart or a user depends on is written through here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path


def fsync_dir(directory: str | Path) -> None:
    """Make a rename or a new entry in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file and directory under ``root`` (a checkpoint directory before it is renamed into place)."""
    root = Path(root)
    for directory, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(directory)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, then fsync and rename the result over ``path``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data, indent: int | None = 1) -> Path:
    return write_text(path, json.dumps(data, indent=indent) + "\n")


def write_jsonl(path: str | Path, rows: Iterable) -> Path:
    """One JSON value per line, streamed to the temporary file (rows may be a generator)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")

    return atomic_write(path, write)


def replace_dir(src: str | Path, dst: str | Path) -> Path:
    """Rename a finished directory into place, durably (its files fsynced first); ``dst`` must not exist."""
    fsync_tree(src)
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)
    return Path(dst)
