"""The two kinds of trouble a worker step can raise (the step machine, kdq/steps.py, sorts on them), and
the one way a full disk, and a database that cannot be used right now, are named."""

from __future__ import annotations

import os
from pathlib import Path


class TransientError(RuntimeError):
    """Trouble that can pass (network, a busy service): the step waits and tries again."""


class PermanentError(RuntimeError):
    """Trouble that waiting will not fix (no credentials, a broken run): the stage fails with this text."""


class CredentialError(PermanentError):
    """A login this machine lacks (no Modal login, no Hugging Face token): every experiment that needs it
    would fail alike, so the worker pauses them instead (kdq/pause.py) and goes on once it works.
    ``key``: which login ("modal", "huggingface")."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


LOW_DISK_BYTES = 32 << 20  # less free than this on the disk a write failed on: that disk is full


def disk_full(exc: BaseException, path=None) -> str | None:
    """One line naming a full disk (ENOSPC and the path it could not write), or ``None`` for other trouble.

    An ``OSError`` says ENOSPC itself; SQLite says "database or disk is full"; torch only says a write
    failed, so then the disk holding ``path`` is looked at.
    """
    import errno
    import sqlite3

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return f"disk full (ENOSPC): no space left to write {seen.filename or path or 'a file'}"
        if isinstance(seen, sqlite3.OperationalError) and "full" in str(seen).lower():
            return f"disk full (ENOSPC): cannot write {path or 'the database'} ({seen})"
        seen = seen.__cause__ or seen.__context__
    return None if path is None else disk_full_at(path)


def read_only(exc: BaseException, path=None) -> str | None:
    """One line naming a read-only file system (EROFS), the folder it could not write and the fix, or
    ``None`` for other trouble. ``path``: the folder to name (a run folder); else the file that failed."""
    import errno
    import sqlite3

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.EROFS:
            return read_only_line(path or seen.filename or "a file")
        if isinstance(seen, sqlite3.OperationalError) and "readonly database" in str(seen):
            return read_only_line(path or "kdq.db")  # SQLite's word for it
        seen = seen.__cause__ or seen.__context__
    return None


def read_only_at(path) -> str | None:
    """The read-only line when ``path`` (a folder) sits on a read-only file system, else ``None``."""
    import errno

    try:
        if not os.statvfs(path).f_flag & os.ST_RDONLY:
            return None
    except OSError:
        return None
    return read_only(OSError(errno.EROFS, "Read-only file system", str(path)), path)


def read_only_line(path) -> str:
    return (
        f"read-only file system (EROFS): cannot write {path}; kdq keeps its state and runs in KDQ_HOME: "
        "make it writable again (or set KDQ_HOME to a writable folder), then `kdq retry ID` (it resumes)"
    )


def cannot_write(exc: BaseException, path=None) -> str | None:
    """The one line for a write that failed for want of room or of a writable disk, else ``None``."""
    return disk_full(exc, path) or read_only(exc, path)


def disk_full_at(path) -> str | None:
    """The full-disk line when the disk holding ``path`` has (almost) no room left, else ``None``."""
    import shutil
    from pathlib import Path

    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return None
    if free >= LOW_DISK_BYTES:
        return None
    return f"disk full (ENOSPC): no space left to write {path} ({free // 1024} KiB free on its disk)"


def database_locked(exc: BaseException) -> bool:
    import sqlite3

    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def database_trouble(exc: BaseException, path: Path) -> str | None:
    """One line for a database that cannot be used right now (a command's ``error:``): busy, read-only,
    deleted under a worker, a full disk; ``None`` if ``exc`` is none of those."""
    import sqlite3

    if not isinstance(exc, sqlite3.OperationalError):
        return None
    text = str(exc)
    if full := disk_full(exc, path):
        return full
    if database_locked(exc):
        return (
            f"{path} is busy: another process holds its write lock (a `sqlite3` shell or a backup? "
            f"`fuser {path}` names it); nothing was written, try again once it is released"
        )
    if "readonly" in text or "read-only" in text or read_only_at(path.parent):  # a read-only mount
        return (
            f"{path} cannot be written ({text}): kdq keeps its state in KDQ_HOME; make {path.parent} "
            "writable again, or set KDQ_HOME to a writable folder; nothing was changed"
        )
    if "disk I/O" in text or "unable to open" in text:
        return (
            f"{path} cannot be read or written ({text}): was it deleted or replaced while a worker ran? "
            "Stop every `kdq worker`, then run the command again"
        )
    return None
