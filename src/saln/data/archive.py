"""A per-class slice of an image archive in ImageFolder layout (``<root>/<split>/<class>/<file>``),
for experiments and tests that want real images at a fraction of the size."""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from saln.errors import InvalidInput


def parse_per_class(text: str) -> dict[str, int]:
    """``"train=500,test=200"`` -> {"train": 500, "test": 200}."""
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        split, sep, number = item.partition("=")
        if not sep or not number.strip().isdigit() or int(number) < 1:
            raise InvalidInput(
                f"bad per-class count {item!r}: write SPLIT=N with N >= 1, e.g. train=500,test=200"
            )
        counts[split.strip()] = int(number)
    if not counts:
        raise InvalidInput("no per-class counts given: write e.g. train=500,test=200")
    return counts


# What a truncated or foreign file raises while tarfile reads it.
UNREADABLE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def extract_per_class(archive: Path, dest: Path, per_class: dict[str, int]) -> Path:
    """Copy the first ``per_class[split]`` files of every class of each split out of a
    ``.tar(.gz)`` archive into ``dest/<split>/<class>/``; returns ``dest``.

    The slice is written next to ``dest`` and renamed into place, so an interrupted extraction
    never leaves a partial folder that a later run would read as the dataset.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    if dest.exists():
        raise FileExistsError(f"{dest} exists; remove it or choose another destination")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        try:
            taken = _copy_slice(archive, staging, per_class)
        except UNREADABLE as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InvalidInput(
                f"{archive} is not a readable .tar or .tar.gz archive ({first}): it is "
                "truncated or of another format; download it again"
            ) from None
        missing = sorted(set(per_class) - {split for split, _ in taken})
        if missing:
            raise InvalidInput(
                f"{archive} has no files under {'/'.join(missing)}/<class>/; "
                "the layout must be <root>/<split>/<class>/<file>"
            )
        os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _copy_slice(archive: Path, root: Path, per_class: dict[str, int]) -> dict[tuple[str, str], int]:
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3 or ".." in parts[-3:]:
                continue  # not a <split>/<class>/<file> member, or one that would leave its place
            split, label, name = parts[-3], parts[-2], parts[-1]
            if taken.get((split, label), 0) >= per_class.get(split, 0):
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            target = root / split / label / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
            taken[(split, label)] = taken.get((split, label), 0) + 1
    return taken
