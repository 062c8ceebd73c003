"""Shared by the benchmark scripts: the report header (command, revision, machine) and timing."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        threads = f", torch {torch.__version__} with {torch.get_num_threads()} threads"
        if torch.cuda.is_available():
            threads += f", GPU {torch.cuda.get_device_name()}"
    except ImportError:
        threads = ""
    return f"{cpu}, {os.cpu_count()} cores{threads}, Python {platform.python_version()}"


def _script(path: str) -> str:
    """The script as run from the repository root: no machine's paths in a committed report."""
    p = Path(path).resolve()
    root = Path(__file__).resolve().parents[1]
    if p.is_relative_to(root):
        return str(p.relative_to(root))
    return path if not Path(path).is_absolute() else p.name


def header(title: str) -> list[str]:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results"],
        capture_output=True,
        text=True,
    )
    if rev and dirty.stdout.strip():  # code that differs from the revision (results files do not count)
        rev += " with uncommitted changes"
    return [
        f"# {title}",
        "",
        f"Command: `{' '.join([Path(sys.executable).name, _script(sys.argv[0]), *sys.argv[1:]])}`  ",
        f"Revision {rev or 'unknown'}; {machine()}; {time.strftime('%Y-%m-%d', time.gmtime())}",
        "",
    ]


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")
