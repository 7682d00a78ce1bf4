"""SQLite's errors as perdure's: which file, what is wrong with it, and what to do.

SQLite reports a problem with its file in a few words and no path ("unable to open
database file", "disk I/O error"); this names the file and looks at it (does its
folder exist, may this process read and write it) to say what is wrong. Only a
database locked by another writer is an outage that heals by itself
(``StoreUnavailableError``); a statement or value SQLite refuses is
``StoreRejectedError``; any other failure is a ``StoreError`` that says what to fix.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .._errors import StoreError, StoreInDoubtError, StoreRejectedError, StoreUnavailableError
from ._limits import not_utf8


def _code(exc: sqlite3.Error) -> str:
    # sqlite_errorname is Python 3.11+; earlier, read the message.
    name = getattr(exc, "sqlite_errorname", None)
    if name:
        # "SQLITE_IOERR_SHORT_READ" -> "IOERR"
        return str(name).removeprefix("SQLITE_").split("_")[0]
    text = str(exc).lower()
    for needle, code in (
        ("database is locked", "BUSY"),
        ("database table is locked", "LOCKED"),
        ("unable to open database file", "CANTOPEN"),
        ("file is not a database", "NOTADB"),
        ("malformed", "CORRUPT"),
        ("disk i/o error", "IOERR"),
        ("readonly database", "READONLY"),
        ("disk is full", "FULL"),
    ):
        if needle in text:
            return code
    return ""


class CommitInDoubt(Exception):  # noqa: N818 - a state, turned into StoreInDoubtError
    """SQLite failed at COMMIT and left no transaction open: it rolled back what this
    connection sees, yet the writes may already be in the -wal file, where the next
    recovery of the file can find them committed (an fsync that failed after the write).
    Raised by the writer's transaction; ``translate`` turns it into ``StoreInDoubtError``."""

    def __init__(self, error: sqlite3.Error) -> None:
        super().__init__(str(error))
        self.error = error


def in_doubt(exc: sqlite3.Error) -> bool:
    """Whether a statement that committed by itself (autocommit) may have committed
    although it failed: SQLite failed to write or sync a file (an I/O error, a full
    disk), which at the commit leaves the -wal file holding what recovery may find."""
    return _code(exc) in ("IOERR", "FULL")


def translate(exc: Exception, path: Path, busy_timeout_ms: int) -> Exception:
    """The store's error for ``exc`` met on the database file ``path`` (chained by the
    caller); an error that is not SQLite's is returned unchanged."""
    if isinstance(exc, CommitInDoubt):
        cause = translate(exc.error, path, busy_timeout_ms)
        return StoreInDoubtError(
            f"{cause} (this happened at COMMIT, after the writes were sent: they may have "
            "been committed or not, so look before doing them again)"
        )
    if isinstance(exc, UnicodeEncodeError):
        return not_utf8(exc)
    if not isinstance(exc, sqlite3.Error):
        return exc
    code = _code(exc)
    where = f"the SQLite database {str(path)!r}"
    if code in ("BUSY", "LOCKED"):
        return StoreUnavailableError(
            f"{where} stayed locked by another process for {busy_timeout_ms} ms ({exc}): "
            "raise busy_timeout in the URL, or use PostgreSQL for many writers"
        )
    if code == "CANTOPEN":
        return StoreError(f"cannot open {where} ({exc}): {cannot_open(path)}")
    if code in ("NOTADB", "CORRUPT"):
        return StoreError(
            f"{where} is not a readable SQLite database ({exc}): it may be truncated, "
            "damaged, or another kind of file. Point the URL at the right file, or restore "
            "it (with its -wal file) from a backup"
        )
    if code == "READONLY":
        return StoreError(f"{where} is read-only for this process ({exc}): {access_problem(path)}")
    if code == "FULL":
        return StoreError(f"{where}: the disk is full ({exc}); free space on it")
    if code == "IOERR":
        return StoreError(
            f"a disk I/O error on {where} ({exc}): the disk may be full or failing, the file "
            "system read-only, or the file (or its -wal/-shm files) removed, truncated or "
            f"replaced while in use. {access_problem(path)}"
        )
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError)):
        return StoreRejectedError(
            f"{where} refused the operation ({exc}); retrying will not help: this is a bug "
            "or a value perdure should have refused before, please report it"
        )
    return StoreError(f"SQLite failed on {where}: {exc}")


def cannot_open(path: Path) -> str:
    """Why SQLite may be unable to open ``path``, found by looking at it."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        return f"its folder {str(folder)!r} does not exist: create it, or fix the path in the URL"
    if not folder.is_dir():
        return f"{str(folder)!r} is not a folder: fix the path in the URL"
    if path.is_dir():
        return "that path is a folder, not a file: name a file in the URL"
    return access_problem(path)


def access_problem(path: Path) -> str:
    """What this process may not do to the database file or its folder, if anything."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return (
            f"this process (uid {os.geteuid()}) may not read and write {str(path)!r}: "
            "check its owner and permissions"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"this process (uid {os.geteuid()}) may not create files in {str(folder)!r} "
            "(SQLite needs to, for the -wal and -shm files): check the folder's permissions"
        )
    return "check that the file and its folder are readable and writable by this process"
