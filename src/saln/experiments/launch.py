"""Launch one training run as its own torchrun job."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from saln.config import Config
from saln.errors import UserError


class LaunchError(UserError, RuntimeError):
    """A run launched through torchrun failed; its ranks printed why."""


def launch_torchrun(config: Config, out: Path, nproc: int) -> None:
    """Run one training run as ``torchrun --nproc_per_node=nproc -m saln train`` and wait."""
    # torchrun's per-launch log folder defaults to a new /tmp/torchelastic_* it never removes.
    with tempfile.TemporaryDirectory(prefix="saln-torchrun-") as scratch:
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
        if (out / "config.yaml").exists():
            command.append("--resume")
        done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise LaunchError(
            f"torchrun for {out} failed with exit code {done.returncode}; see its output above"
        )
