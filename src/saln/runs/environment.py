"""What a run ran on: versions, host, device and the commit of the code that ran."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": installed_version("torchvision"),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "argv": sys.argv,
        **loaded_code(),
    }
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return env


def installed_version(package: str) -> str | None:
    """A package's installed version, read from its metadata: importing torchvision only to
    ask costs seconds."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


PACKAGE_DIR = Path(__file__).resolve().parent


def _git(*args: str, cwd: Path = PACKAGE_DIR) -> str | None:
    """git's output in ``cwd``, or None where git or a checkout is missing."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_sha(cwd: Path = PACKAGE_DIR) -> str | None:
    """The checkout's commit, or None outside a git checkout."""
    return _git("rev-parse", "HEAD", cwd=cwd) or None


@functools.cache
def loaded_code() -> dict[str, Any]:
    """The commit (and dirtiness) of the code this process runs, read once, at its first run:
    a comparison trains its runs in one process, whose code does not change when the checkout
    does (a run started later must not claim a later commit)."""
    return {"git_sha": git_sha(), "git_dirty": git_dirty()}


def git_dirty(cwd: Path = PACKAGE_DIR) -> bool | None:
    """Whether tracked files differ from that commit (then the SHA alone does not say what
    code ran), or None outside a git checkout."""
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return None if status is None else bool(status)
