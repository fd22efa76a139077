"""One `dialer serve` per database: an exclusive lock that the kernel releases when the process
dies, so `kill -9` never leaves a stale lock behind.

The lock is `flock` on `<database>.lock` (created readable by its owner only), which holds the
PID of the instance that owns it, and on the database file itself, which is the same file
whatever path reaches it (a symlink, a hard link, another mount): a second `serve` given another
name for the database is refused too. (SQLite's own locks are POSIX record locks, independent of
`flock` on a local file system; the descriptor stays open for the life of the process, as
closing one would drop SQLite's locks on the file.) `dialer serve` passes the database's real
path (symlinks resolved), so the lock, the dial log and the held outcomes beside the database
are the same files for every name of it. Commands that only read or add keys (`dialer keys`)
do not take it and keep working while the service runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os


class InstanceLocked(Exception):
    """Another process holds the database's instance lock."""

    def __init__(self, path: str, pid: str) -> None:
        super().__init__(f"database {path} is in use by another dialer serve (pid {pid})")
        self.pid = pid


def lock_path(database: str) -> str:
    return database + ".lock"


def acquire(database: str) -> int:
    """Take the instance lock of a database file; return the descriptor that holds it (keep it
    open for the life of the process). Raises InstanceLocked, or OSError when the lock file
    cannot be created."""
    path = lock_path(database)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        made = True
    except FileExistsError:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        made = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = "unknown"
        with contextlib.suppress(OSError):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise InstanceLocked(database, holder) from None
    except BaseException:
        os.close(fd)
        raise
    try:
        _lock_database_file(database)
    except BaseException:
        if made:  # a start refused writes nothing: not even a lock file beside another name
            with contextlib.suppress(OSError):
                os.unlink(path)
        os.close(fd)
        raise
    with contextlib.suppress(OSError):
        _previous[database] = os.pread(fd, 32, 0).decode(errors="replace").strip()
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _lock_database_file(database: str) -> None:
    """flock the database file itself, held by a descriptor never closed. A database not made
    yet has no other name (its hard links come after it): nothing to lock, nothing created."""
    try:
        fd = os.open(database, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        _unmade.add(database)  # locked by lock_made once the store made it
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)  # (no SQLite connection of this process has the file open yet)
        raise InstanceLocked(database, "unknown: the same database by another name") from None
    except BaseException:
        os.close(fd)
        raise
    _held.append(fd)


# Descriptors holding the database files' locks: never closed while the process lives.
_held: list[int] = []
# Databases this process took the lock of before their file existed.
_unmade: set[str] = set()


def lock_made(database: str) -> None:
    """Lock the database file that did not exist when this process took the instance lock
    (`serve` made it since). Nothing else had it by another name: a link needs the file."""
    if database in _unmade:
        _unmade.discard(database)
        _lock_database_file(database)


def release(fd: int) -> None:
    """Give the locks back (tests only: `dialer serve` holds them until it exits, and must not
    close the database file's descriptor while SQLite has the file open)."""
    os.close(fd)
    while _held:
        os.close(_held.pop())
    _unmade.clear()


# database -> the PID its lock file named when this process took the lock (the last `dialer
# serve` on it before this one; "" for none).
_previous: dict[str, str] = {}


def previous_holder(database: str) -> str | None:
    """The PID of the last `dialer serve` on the database before this process, as its lock file
    said when this process took the lock; None if this process did not take it."""
    return _previous.get(database)
