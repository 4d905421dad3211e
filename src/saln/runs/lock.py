"""One writer per folder: an advisory lock that the operating system releases when its holder
dies, so a killed run never blocks the next one, and a file naming the holder for the message
a second writer gets."""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from saln.errors import InvalidInput, UserError
from saln.io import file_in_the_way, write_text_atomic

LOCK_FILE = ".lock"
OWNER_FILE = ".lock-owner"


class FolderInUse(UserError):
    """Another process is writing into the folder."""


def holder(folder: Path) -> str:
    try:
        return (folder / OWNER_FILE).read_text().strip() or "another process"
    except OSError:
        return "another process"


# Folders this process holds: a comparison holds its folder and each of its runs holds its own
# inside it; only another process's hold on an enclosing folder is a conflict.
_HELD: set[Path] = set()


def held_above(folder: Path) -> Path | None:
    """The nearest enclosing folder another process holds for writing, if any: a lock covers
    its folder's subfolders (a sweep's folder and the comparisons inside it)."""
    for above in folder.resolve().parents:
        if above in _HELD or not (above / LOCK_FILE).is_file() or held_by_ancestor(above):
            continue
        probe = FileLock(above / LOCK_FILE)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return above
        except OSError:  # a lock file we cannot open is no lock we could take either
            continue
        probe.release()
    return None


def ancestor_pids() -> set[int]:
    """This process's parent, its parent's parent, ...: a comparison launches its runs through
    torchrun, whose ranks write inside the comparison's folder by design."""
    found, pid = set(), os.getppid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])  # the field after the state
    return found


def held_by_ancestor(folder: Path) -> bool:
    owner = re.match(r"process (\d+) on (\S+)", holder(folder))
    if owner is None:
        return False
    return owner[2] == socket.gethostname() and int(owner[1]) in ancestor_pids()


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = file_in_the_way(folder) or folder
        raise InvalidInput(
            f"cannot make the folder {folder}: {blocking} is a file, not a folder; choose "
            "another --out"
        ) from None


@contextmanager
def writing(folder: Path, what: str) -> Iterator[None]:
    """Hold ``folder`` (and so everything under it) for writing for the block; a second writer
    fails at once, naming the folder and the process that holds it. ``what`` says what is
    written there."""
    make_folder(folder)
    above = held_above(folder)
    if above is not None:
        raise FolderInUse(
            f"{folder} is inside {above}, which {holder(above)} is writing: wait for it to end "
            "(or stop it), or choose an --out outside it"
        )
    lock = FileLock(folder / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise FolderInUse(
            f"{folder} is in use by {holder(folder)}, which is writing {what} there: wait for "
            "it to end (or stop it), or choose another --out"
        ) from None
    owner = folder / OWNER_FILE
    key = folder.resolve()
    _HELD.add(key)
    try:
        command = " ".join(sys.argv)
        # atomic: a full disk raises OutOfSpace naming the folder and leaves nothing behind
        write_text_atomic(owner, f"process {os.getpid()} on {socket.gethostname()} ({command})\n")
        yield
    finally:
        _HELD.discard(key)
        owner.unlink(missing_ok=True)
        lock.release()


def remove_lock_files(folder: Path) -> None:
    """What :func:`writing` leaves in a folder, for one that is about to be removed."""
    for name in (LOCK_FILE, OWNER_FILE):
        (folder / name).unlink(missing_ok=True)
