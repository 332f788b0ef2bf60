"""Sites: one recorded module call and output tensor, its name and its unit layout.

Naming (part of the file format): a module called k times in one forward gives sites ``name``,
``name#1``, ``name#2``, … in call order; a tuple or list output adds ``[0]``, ``[1]``, …; a dict
output adds ``[key]``; tensors that are not floating point, and non-tensors, are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ..runfile.format import Site

__all__ = ["CHANNEL_FIRST_MODULES", "Site", "floating_outputs", "site_name", "unit_dim"]

MAX_OUTPUT_DEPTH = 4

# Modules whose 3-D outputs are (N, C, L): their units are along dim 1, not the last dim.
CHANNEL_FIRST_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
    nn.GroupNorm,
)


def site_name(module_name: str, call_index: int, suffix: str) -> str:
    """The file's name for output ``suffix`` of call ``call_index`` (0-based) of a module."""
    return (module_name if call_index == 0 else f"{module_name}#{call_index}") + suffix


def floating_outputs(output: object, suffix: str = "", depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(suffix, tensor)`` for every floating-point tensor in a module's output."""
    if isinstance(output, torch.Tensor):
        if output.is_floating_point() and not output.is_complex():
            yield suffix, output
    elif depth < MAX_OUTPUT_DEPTH and isinstance(output, (tuple, list)):
        for index, item in enumerate(output):
            yield from floating_outputs(item, f"{suffix}[{index}]", depth + 1)
    elif depth < MAX_OUTPUT_DEPTH and isinstance(output, dict):
        for key, item in output.items():
            yield from floating_outputs(item, f"{suffix}[{key}]", depth + 1)


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a ``DTensor`` (tensor parallelism, FSDP2's parameters): each rank holds a
    part of it."""
    return type(tensor) is not torch.Tensor and type(tensor).__name__ == "DTensor" and hasattr(tensor, "placements")


def plain(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is an ordinary tensor whose memory the kernels can read. A subclass — a
    ``DTensor`` (a shard on each rank), the ``AsyncCollectiveTensor`` of a tensor-parallel layer, a
    quantised tensor — is not: such outputs are not recorded (the probe says which)."""
    return type(tensor) is torch.Tensor or type(tensor) is nn.Parameter


def local_part(tensor: torch.Tensor) -> torch.Tensor | None:
    """A parameter (or its gradient) as this rank holds it: a plain tensor itself; a DTensor sharded or
    replicated over the ranks (FSDP2) its local part, which a distributed run merges over the ranks (a
    replicated one counted once); None for a DTensor with pending reductions (``Partial`` placements) and
    for any other tensor subclass."""
    if plain(tensor):
        return tensor
    if not is_sharded(tensor):
        return None
    if any(type(p).__name__ not in ("Shard", "Replicate") for p in tensor.placements):
        return None
    return tensor.to_local()


def unit_dim(module: nn.Module, shape: torch.Size, channel_first_shapes: set[torch.Size]) -> int | None:
    """The dimension that holds the units of an output, used for the ``dead`` statistic.

    The rule (documented in docs/FORMAT.md): 0-D and 1-D outputs have no units; 2-D (N, F) outputs
    have units along the last dim; outputs of 4 or more dims (N, C, H, W, …) along dim 1; 3-D outputs
    along dim 1 when the module is a convolution, normalisation or pooling layer (N, C, L), or when
    an earlier such layer of the same forward produced a 3-D output of exactly this shape (an
    activation after a Conv1d), and along the last dim otherwise (N, T, F).
    """
    ndim = len(shape)
    if ndim <= 1:
        return None
    if ndim == 2:
        return -1
    if ndim >= 4:
        return 1
    if isinstance(module, CHANNEL_FIRST_MODULES):
        channel_first_shapes.add(shape)
        return 1
    return 1 if shape in channel_first_shapes else -1
