"""How the two programs end: without the interpreter's teardown, which takes about a second once torch and
gRPC are loaded (every command, every embedded server's stop, every rolling restart would wait for it).

:func:`exit_fast` runs the exit handlers (Ray's shutdown, logging's flush), flushes the standard streams and
leaves with ``os._exit``. It does so only when nothing else is still running: with a live non-daemon thread
it exits the ordinary way, which waits for it.
"""

from __future__ import annotations

import sys
from typing import NoReturn


def exit_fast(code: int = 0) -> NoReturn:
    import atexit
    import contextlib
    import logging
    import os
    import threading

    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(code)


def run(app) -> NoReturn:
    """Run a Typer or Click ``app`` as the program, then :func:`exit_fast` with its exit status."""
    try:
        app()
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    exit_fast(code)
