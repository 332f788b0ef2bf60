"""Reference models: the CNN of the WIB-ReLU paper, used by the recipes, examples, benchmarks and tests."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .nn import make_activation


def paper_cnn(in_channels: int = 1, classes: int = 10, activation: str | Callable[[], nn.Module] = "relu"
              ) -> nn.Sequential:
    """The reference CNN of the WIB-ReLU paper (Fig. 6), with PyTorch's default initialisation.

    conv 8@5×5 stride 2 pad 2 → act → conv 16@3×3 s2 p1 → act → conv 32@3×3 s2 p1 → act →
    conv 64@3×3 s2 p1 → act → adaptive average pool → flatten → linear 64×classes.

    ``activation`` is a name from ``actprobe.nn.ACTIVATIONS`` (``relu``, ``wib-relu-fixed``, …) or a
    function that makes a new activation module.
    """
    def act() -> nn.Module:
        return make_activation(activation) if isinstance(activation, str) else activation()

    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 5, stride=2, padding=2), act(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), act(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), act(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), act(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes),
    )
