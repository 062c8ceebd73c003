"""Progress reporting: library code takes a plain callback; the CLIs turn it into rich bars."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

StageProgress = Callable[[str, int, int], None]  # (stage, done, total)


@contextmanager
def progress_bars(transient: bool = False) -> Iterator[StageProgress]:
    """Yield a ``(stage, done, total)`` callback that draws one rich progress bar per stage (total 0: unknown)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=transient,
    ) as bars:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total or None)
            bars.update(tasks[stage], completed=done, total=total or None)

        yield update


def quiet_libraries() -> None:
    """Silence transformers' and datasets' own bars and info logs under our progress bars."""
    import logging
    import warnings

    import transformers

    # deprecations raised inside transformers by TRL's own calls: nothing a user of ours can act on
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - datasets comes with trl
        pass
    logging.getLogger("trl").setLevel(logging.ERROR)
