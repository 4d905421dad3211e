"""One writer per folder: an advisory lock that the operating system releases when its holder
dies, so a killed run never blocks the next one, and a file naming the holder for the message
a second writer gets."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from saln.errors import UserError

LOCK_FILE = ".lock"
OWNER_FILE = ".lock-owner"


class FolderInUse(UserError):
    """Another process is writing into the folder."""


def holder(folder: Path) -> str:
    try:
        return (folder / OWNER_FILE).read_text().strip() or "another process"
    except OSError:
        return "another process"


@contextmanager
def writing(folder: Path, what: str) -> Iterator[None]:
    """Hold ``folder`` for writing for the block; a second writer fails at once, naming the
    folder and the process that holds it. ``what`` says what is written there."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise FolderInUse(
            f"{folder} is in use by {holder(folder)}, which is writing {what} there: wait for "
            "it to end (or stop it), or choose another --out"
        ) from None
    owner = folder / OWNER_FILE
    try:
        command = " ".join(sys.argv)
        owner.write_text(f"process {os.getpid()} on {socket.gethostname()} ({command})\n")
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def remove_lock_files(folder: Path) -> None:
    """What :func:`writing` leaves in a folder, for one that is about to be removed."""
    for name in (LOCK_FILE, OWNER_FILE):
        (folder / name).unlink(missing_ok=True)
