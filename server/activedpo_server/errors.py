"""The engine's error classes and the one place that turns any exception into a gRPC status.

Engine and store code raise these (or ValueError, CheckpointError) and never touch gRPC; the
server's :class:`ErrorMapping` interceptor calls :func:`status_for` on whatever escapes an RPC
handler, so a caller sees a precise code and one bounded line, never a traceback. Only a bug is
INTERNAL, and even then the message is one line and the traceback goes to the server's log.
"""

from __future__ import annotations

import errno
import sqlite3

MAX_MESSAGE_CHARS = 500  # a status message is one line of at most this many characters


class ServerError(Exception):
    """Base of the domain errors; ``code`` is the gRPC status name it maps to."""

    code = "INTERNAL"


class InvalidArgument(ServerError, ValueError):
    """The request itself is wrong (a limit, a malformed field); nothing was changed."""

    code = "INVALID_ARGUMENT"


class NotFound(ServerError, LookupError):
    """The request names something the server does not have (a checkpoint id, a lease)."""

    code = "NOT_FOUND"


class FailedPrecondition(ServerError, RuntimeError):
    """The request is well formed but the server's state does not allow it now."""

    code = "FAILED_PRECONDITION"


class PermissionDenied(ServerError, PermissionError):
    """The server will not do this for a remote caller (a path outside its checkpoint roots)."""

    code = "PERMISSION_DENIED"


class ResourceExhausted(ServerError, OSError):
    """The disk is full (or a size limit of the state dir was reached)."""

    code = "RESOURCE_EXHAUSTED"


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_disk_full(e: BaseException) -> bool:
    """A write failed for lack of space: SQLite's SQLITE_FULL, or ENOSPC/EDQUOT/EFBIG from the OS."""
    if isinstance(e, sqlite3.Error):
        return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(e).lower()
    return isinstance(e, OSError) and e.errno in _FULL_ERRNOS


def one_line(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` on one line, cut to ``limit`` characters."""
    line = " ".join(str(message).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def status_for(e: BaseException) -> tuple[str, str]:
    """(gRPC status name, one-line message) for an exception that escaped a handler."""
    from activedpo_core.checkpoint import CheckpointError

    if isinstance(e, ServerError):
        return e.code, one_line(str(e))
    if is_disk_full(e):
        return "RESOURCE_EXHAUSTED", one_line(f"the server's disk is full: {e}")
    if isinstance(e, CheckpointError | ValueError):
        return "INVALID_ARGUMENT", one_line(str(e))
    return "INTERNAL", one_line(f"internal error ({type(e).__name__}); the server's log has the details")
