"""A zoo of small networks, healthy and broken, each recorded by a real Probe on Fashion-MNIST batches
(28×28 images, standardised; sequence models read an image as 28 rows of 28 features).

Healthy networks use the init their architecture is meant to have; broken ones carry one known fault.
``record(name, path)`` trains (or, for an init check, only runs) the network and writes the run file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import actprobe
from actprobe.datasets import loader

STEPS = 20
BATCH = 64


def kaiming(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def mlp(widths: list[int], *, init: str = "kaiming") -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(widths[:-2], widths[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    model = nn.Sequential(*layers)
    if init == "kaiming":
        kaiming(model)
    elif init == "normal":
        for module in model.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 1.0)
    return model


class TwoHeads(nn.Module):
    """One hidden layer and two parallel heads, returned as a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten, self.hidden, self.act = nn.Flatten(), nn.Linear(784, 128), nn.ReLU()
        self.classes, self.parity = nn.Linear(128, 10), nn.Linear(128, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.act(self.hidden(self.flatten(x)))
        return {"classes": self.classes(h), "parity": self.parity(h)}


class BasicBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out += x
        return self.relu(out)


def residual() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                         *[BasicBlock(16) for _ in range(4)], nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool, self.fc1, self.relu = nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, 8, 1), nn.ReLU()
        self.fc2, self.gate = nn.Conv2d(8, channels, 1), nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


def separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                         nn.Hardswish(), SqueezeExcite(cin), nn.Conv2d(cin, cout, 1, bias=False),
                         nn.BatchNorm2d(cout), nn.Hardswish())


def depthwise_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish(),
                         separable(16, 32, 1), separable(32, 32, 2), separable(32, 64, 1), separable(64, 64, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 10))


class Rows(nn.Module):
    """(N, 1, 28, 28) images as (N, 28, 28) sequences of rows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1, 2)


class Transformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(28, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x.flatten(1, 2))).mean(1))


class RowLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.head = nn.LSTM(28, 64, batch_first=True), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.flatten(1, 2))
        return self.head(out[:, -1])


def dead_bias() -> nn.Module:
    model = mlp([784, 128, 128, 64, 10])
    nn.init.constant_(model[3].bias, -10.0)  # the second hidden layer: every pre-activation far below 0
    return model


def zero_head() -> nn.Module:
    model = mlp([784, 256, 128, 10])
    nn.init.zeros_(model[-1].weight)  # as ViT's head: zero at init, on purpose
    nn.init.zeros_(model[-1].bias)
    return model


@dataclass(frozen=True)
class Member:
    build: Callable[[], nn.Module]
    healthy: bool
    steps: int = STEPS
    nan_from: int | None = None  # the step from which a weight is NaN


ZOO: dict[str, Member] = {
    "kaiming-mlp": Member(lambda: mlp([784, 256, 256, 128, 10]), True),
    "kaiming-cnn": Member(lambda: kaiming(nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))), True),
    "bn-dropout-mlp": Member(lambda: nn.Sequential(
        nn.Flatten(), *[m for a, b in ((784, 256), (256, 256), (256, 128)) for m in
                        (nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(), nn.Dropout(0.5))], nn.Linear(128, 10)), True),
    "two-heads": Member(TwoHeads, True),
    "residual": Member(residual, True),
    "transformer": Member(Transformer, True),
    "depthwise-cnn": Member(depthwise_cnn, True),
    "lstm": Member(RowLSTM, True),
    "zero-head-init": Member(zero_head, True, steps=1),
    "default-deep-mlp": Member(lambda: mlp([784] + [256] * 19 + [10], init="default"), False, steps=3),
    "normal-weights": Member(lambda: mlp([784, 256, 256, 256, 256, 10], init="normal"), False, steps=3),
    "dead-bias": Member(dead_bias, False),
    "nan-from-step-8": Member(lambda: mlp([784, 256, 128, 10]), False, nan_from=8),
}


def _loss(output: torch.Tensor | dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    if isinstance(output, dict):
        return nn.functional.cross_entropy(output["classes"], y) + nn.functional.cross_entropy(output["parity"], y % 2)
    return nn.functional.cross_entropy(output, y)


def _batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    data = loader("fashion-mnist", batch_size=BATCH, seed=0, per_class=40)  # 400 images, reshuffled each pass
    while True:
        yield from data


def record(name: str, path: Path) -> Path:
    """Train zoo member ``name`` for its steps with Adam (lr 1e-3) and record every step, gradients
    included, into ``path``."""
    member = ZOO[name]
    torch.manual_seed(0)
    model = member.build()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = _batches()
    # gradients and parameters recorded too: the gradient and update-ratio rules are judged as well
    with actprobe.Probe(model, path, overwrite=True, grads=True, params=True, optimizer=optimizer) as probe:
        for step in range(member.steps):
            if step == member.nan_from:
                with torch.no_grad():
                    model[1].weight[0, 0] = float("nan")
            x, y = next(batches)
            loss = _loss(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            probe.step(loss=loss)
    return path
