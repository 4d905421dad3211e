"""Launch one training run as its own torchrun job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from saln import distributed
from saln.config import Config
from saln.errors import UserError
from saln.io import process_alive


class LaunchError(UserError, RuntimeError):
    """A run launched through torchrun failed; its ranks printed why."""


LAUNCHED_ENV = "SALN_LAUNCHED_BY_COMPARE"  # set for the runs a comparison launches
SCRATCH = "saln-torchrun-pid"  # + the launcher's pid: a folder of a killed launcher is stale


def launch_torchrun(config: Config, out: Path, nproc: int, overwrite: bool = False) -> None:
    """Run one training run as ``torchrun --nproc_per_node=nproc -m saln train`` and wait.
    torchrun, and through it the ranks, die with this process (see ``die_with_parent``)."""
    remove_stale_scratch()
    # torchrun's per-launch log folder defaults to a new /tmp/torchelastic_* it never removes.
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH}{os.getpid()}-") as scratch:
        config_file = Path(scratch) / "config.yaml"
        config_file.write_text(config.to_yaml())
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            "--standalone",
            f"--log-dir={scratch}",
            "-m",
            "saln",
            "train",
            "--config",
            str(config_file),
            "--out",
            str(out),
        ]
        if overwrite:
            command.append("--overwrite")
        elif (out / "config.yaml").exists():
            command.append("--resume")
        env = {**os.environ, LAUNCHED_ENV: "1"}  # its ranks leave the resume advice to us
        done = subprocess.run(command, check=False, env=env, preexec_fn=distributed.die_with_parent)
    if done.returncode != 0:
        raise LaunchError(
            f"torchrun for {out} failed with exit code {done.returncode}; see its output above"
        )


def remove_stale_scratch() -> None:
    """Scratch folders of launchers that were killed before they could remove them."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH}*"):
        pid = folder.name.removeprefix(SCRATCH).partition("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
