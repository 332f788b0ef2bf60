"""Which device a run uses: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked against this machine."""

from __future__ import annotations

import torch

from ..errors import OptionError


def resolve_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without CUDA is an ``OptionError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise OptionError(f"unknown device {name!r}; use auto, cpu or cuda (cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise OptionError(f"unsupported device {name!r}; use auto, cpu or cuda (cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
            raise OptionError(f"--device {name}: CUDA is not available on this machine ({build}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OptionError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
