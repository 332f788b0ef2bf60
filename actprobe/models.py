"""Reference models: the CNN of the WIB-ReLU paper, used by the examples, benchmarks and tests."""

from __future__ import annotations

from torch import nn


def paper_cnn(in_channels: int = 1, classes: int = 10) -> nn.Sequential:
    """The reference CNN of the WIB-ReLU paper (Fig. 6), with PyTorch's default initialisation.

    conv 8@5×5 stride 2 pad 2 → ReLU → conv 16@3×3 s2 p1 → ReLU → conv 32@3×3 s2 p1 → ReLU →
    conv 64@3×3 s2 p1 → ReLU → adaptive average pool → flatten → linear 64×classes.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes),
    )
