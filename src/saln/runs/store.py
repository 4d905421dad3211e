"""The run directory: config.yaml, env.json, split.json, metrics.jsonl, summary.json, ...

One writer, atomic files, and a clear rule for an existing directory: the same config resumes
(``--resume``) or is complete; a different config is refused unless ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import yaml

from saln.config import Config, ConfigError, from_dict
from saln.errors import InvalidInput
from saln.io import (
    check_writable,
    disk_full,
    out_of_space,
    remove_stale_temporaries,
    write_json_atomic,
    write_text_atomic,
)
from saln.runs.lock import remove_lock_files, writing
from saln.runs.records import EpochRecord, RunSummary

RUN_FILES = (
    "config.yaml",
    "env.json",
    "split.json",
    "data.json",
    "metrics.jsonl",
    "summary.json",
    "checkpoint.pt",
    "best_model.pt",
    "selection_counts.npy",
    "spectral.json",
    "selection_example.json",
)
# Settings that change how a run is shown or launched, not what it computes: a run may resume
# with them changed (CUDA graphs replay the same kernels the eager run launches).
COSMETIC = {
    ("train", "progress"),
    ("train", "tensorboard"),
    ("train", "cuda_graphs"),
    ("features", "cuda_graph"),
    ("features", "cache_dir"),  # where features are kept, not what they are
    ("train", "check_every"),  # how often a diverged loss is looked for
}


def config_differences(
    a: dict[str, Any], b: dict[str, Any], ignore: frozenset[tuple[str, str]] = frozenset()
) -> list[str]:
    """``section.key: a -> b`` for each setting that differs, cosmetic ones and ``ignore`` aside."""
    diffs = []
    for section in sorted(set(a) | set(b)):
        for key in sorted(set(a.get(section, {})) | set(b.get(section, {}))):
            if (section, key) in COSMETIC or (section, key) in ignore:
                continue
            old, new = a.get(section, {}).get(key), b.get(section, {}).get(key)
            if old != new:
                diffs.append(f"{section}.{key}: {old!r} -> {new!r}")
    return diffs


def describe_change(before: dict[str, Any], after: dict[str, Any]) -> str:
    """What differs between two data records (:meth:`ImageSource.fingerprint` per split)."""
    said = []
    for split in sorted(set(before) | set(after)):
        old, new = before.get(split, {}), after.get(split, {})
        counts = [
            f"{split} {what} {old.get(key)} -> {new.get(key)}"
            for key, what in (("count", "images"), ("classes", "classes"))
            if old.get(key) != new.get(key)
        ]
        if not counts and old != new:
            counts = [f"{split} files or labels changed (same count)"]
        said += counts
    return "; ".join(said) or "its record differs"


REPLACED = ".replaced"  # the run --overwrite replaces, until the new one has started


class RunStore:
    """``writer=False`` (every rank but 0 under torchrun) reads but never writes."""

    def __init__(self, path: str | Path, writer: bool = True) -> None:
        self.path = Path(path)
        self.writer = writer
        self.created = False  # whether prepare() made the folder (discard() may remove it)
        self.replacing = False  # --overwrite: start() sets the old run aside, once the new is built
        self.set_aside_here = False  # this process set a replaced run aside (put_back may undo)

    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return self.file("config.yaml").exists()

    def is_complete(self) -> bool:
        return self.file("summary.json").exists()

    def config_dict(self) -> dict[str, Any]:
        """The stored config.yaml as written; a damaged one is refused, naming it."""
        path = self.file("config.yaml")
        try:
            data = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise InvalidInput(
                f"{path} is damaged ({type(err).__name__}); restore it, or rerun this run with "
                "--overwrite"
            ) from None
        if not isinstance(data, dict):
            raise InvalidInput(f"{path} holds no config; restore it, or rerun with --overwrite")
        return data

    def config(self) -> Config:
        try:
            return from_dict(self.config_dict(), stored=True)
        except ConfigError as err:
            raise ConfigError(f"{self.file('config.yaml')}: {err}") from None

    def prepare(self, config: Config, *, resume: bool = False, overwrite: bool = False) -> str:
        """Returns "fresh", "resume" or "complete"; refuses what would lose or mix results.
        Temporary files that killed writes left here are removed."""
        self.created = self.created or not self.path.exists()
        check_writable(self.path, "out dir", "--out")
        remove_stale_temporaries(self.path)
        if overwrite:
            self.replacing = True
        elif not self.exists() and self.orphans():
            raise ConfigError(
                f"{self.path} holds run files ({', '.join(self.orphans())}) but no config.yaml, "
                "so what made them cannot be checked: use --overwrite to replace them, or "
                "another --out"
            )
        elif resume and not self.exists():
            raise ConfigError(
                f"--resume: {self.path} holds no run to resume (no config.yaml); drop --resume "
                "to start one there"
            )
        elif self.exists():
            self.check_config(config)
            if self.is_complete():
                return "complete"
            if not resume:
                raise ConfigError(
                    f"{self.path} holds an unfinished run of this config; pass --resume to "
                    "continue it or --overwrite to start over"
                )
            return "resume"
        return "fresh"

    def orphans(self) -> list[str]:
        """Run files present without the config.yaml that says what made them."""
        return [name for name in RUN_FILES if self.file(name).exists()]

    def check_config(self, config: Config) -> None:
        """Refuse ``config`` if the run here was made with another one (finished or not),
        naming the settings that differ; seeds name the folder, and settings that change only
        how a run is shown or where its cache lives do not count."""
        diffs = self.differences(config)
        if diffs:
            raise ConfigError(
                f"{self.path} holds a run with a different config ({'; '.join(diffs)}); "
                "use --overwrite to replace it, or another --out"
            )

    def differences(self, config: Config) -> list[str]:
        """``section.key: stored -> given`` for each setting that differs from the stored run's.
        Through from_dict, a key added to Config since the run was written reads as its
        default instead of as a difference."""
        return config_differences(self.config().to_dict(), config.to_dict())

    def writing(self) -> AbstractContextManager[None]:
        """Hold the folder for this run's writer (a no-op for a reader)."""
        if not self.writer:
            return nullcontext()
        self.created = not self.path.exists()  # holding it makes the folder
        return writing(self.path, "a training run")

    def start(self, config: Config) -> None:
        """Record the config of a fresh run: from now on the directory holds this run. Called
        once the run is built, so a failed set-up leaves nothing to resume. Under --overwrite
        the run it replaces is set aside (``.replaced/``) until the new one has checkpointed
        an epoch (:meth:`settle`), and put back if it fails before (:meth:`put_back`)."""
        if self.writer:
            if self.replacing:
                self.set_aside()
            write_text_atomic(self.file("config.yaml"), config.to_yaml())

    def set_aside(self) -> None:
        self.set_aside_here = True
        aside = self.file(REPLACED)
        shutil.rmtree(aside, ignore_errors=True)  # an older one a kill left: its run is here
        aside.mkdir()
        for name in (*RUN_FILES, "tensorboard"):
            if self.file(name).exists():
                os.replace(self.file(name), aside / name)

    def settle(self) -> None:
        """The new run has started for real: the old one goes."""
        if self.writer:
            shutil.rmtree(self.file(REPLACED), ignore_errors=True)

    def put_back(self) -> None:
        """The new run failed before its first checkpoint: the run it replaced comes back."""
        aside = self.file(REPLACED)
        if not self.writer or not self.set_aside_here or not aside.is_dir():
            return
        self.clear()
        for entry in aside.iterdir():
            os.replace(entry, self.file(entry.name))
        aside.rmdir()

    def discard(self) -> None:
        """Remove the folder prepare() made if it is still empty: a run whose set-up failed
        leaves no empty run behind (a report would list it as incomplete)."""
        if self.created:
            remove_lock_files(self.path)
            with contextlib.suppress(OSError):
                self.path.rmdir()

    def clear(self) -> None:
        for name in RUN_FILES:
            self.file(name).unlink(missing_ok=True)
        shutil.rmtree(self.file("tensorboard"), ignore_errors=True)  # else old curves show too

    def write_json(self, name: str, payload: Any) -> None:
        if self.writer:
            write_json_atomic(self.file(name), payload)

    def check_data(self, data: dict[str, Any], split: dict[str, Any]) -> None:
        """Before a resume writes anything: the data must be what the run started on (its
        files, labels and classes, ``data.json``) and give the split it recorded
        (``split.json``), or rows trained before the kill would now be val rows."""
        recorded = self.read_json("data.json")
        if recorded is not None and recorded != data:
            raise InvalidInput(
                f"{self.path} was trained on other data: {describe_change(recorded, data)}; "
                "restore the data it started on, or start over with --overwrite"
            )
        stored_split = self.read_json("split.json")
        if stored_split is not None and stored_split != split:
            raise InvalidInput(
                f"{self.path}: the data no longer gives the split this run recorded in "
                "split.json (files were added, removed or renamed since it started); restore "
                "the data it trained on, or start over with --overwrite"
            )

    def record_data(self, data: dict[str, Any], split: dict[str, Any]) -> None:
        """Write ``data.json`` and ``split.json`` where they are missing (rank 0 alone); a
        resume never rewrites them (:meth:`check_data` compared them first)."""
        if not self.writer:
            return
        for name, payload in (("data.json", data), ("split.json", split)):
            if not self.file(name).exists():
                write_json_atomic(self.file(name), payload)

    def read_json(self, name: str) -> Any:
        path = self.file(name)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:  # written atomically: damaged after the fact
            raise InvalidInput(
                f"{path} is not valid JSON ({err}); rerun this run with --overwrite, or move it "
                "out of the folder"
            ) from None

    def append_metrics(self, record: EpochRecord) -> None:
        if not self.writer:
            return
        path = self.file("metrics.jsonl")
        try:
            with open(path, "a") as handle:
                handle.write(json.dumps(record.to_dict()) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:  # a row cut short is dropped on reading: nothing mixed in
            if disk_full(err, self.path):
                raise out_of_space(path) from err
            raise

    def rewrite_metrics(self, records: list[EpochRecord]) -> None:
        if self.writer:
            lines = "".join(json.dumps(r.to_dict()) + "\n" for r in records)
            write_text_atomic(self.file("metrics.jsonl"), lines)

    def metrics(self) -> list[EpochRecord]:
        """Per-epoch rows. A kill while a row was appended can leave it cut short: that last
        row is dropped (resuming rewrites the rows from the checkpoint); a damaged row before
        it is an error."""
        path = self.file("metrics.jsonl")
        if not path.exists():
            return []
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        rows = []
        for number, line in enumerate(lines, 1):
            try:
                rows.append(EpochRecord.from_dict(json.loads(line), f"{path} line {number}"))
            except json.JSONDecodeError as err:
                if number == len(lines):
                    break
                raise InvalidInput(
                    f"{path} line {number} is not valid JSON ({err}); rerun this run with "
                    "--overwrite"
                ) from None
        return rows

    def summary(self) -> RunSummary | None:
        data = self.read_json("summary.json")
        return None if data is None else RunSummary.from_dict(data, self.file("summary.json"))

    def require_summary(self) -> RunSummary:
        summary = self.summary()
        if summary is None:
            raise InvalidInput(f"{self.path} holds no finished run (no summary.json)")
        return summary
