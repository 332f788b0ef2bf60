"""The training steps the benchmarks time: the paper's CNN, torchvision's ResNet-50 and a 12-layer
transformer encoder, each with its inputs, on one device.

    ResNet-50:    bf16 autocast, channels-last, batch 128 of 3×224×224, SGD
    transformer:  nn.TransformerEncoder, 12 layers, d=1024, 16 heads, feed-forward 4096,
                  bf16 autocast, 16 sequences × 512 tokens, Adam
    paper CNN:    float32, batch 256 of 1×28×28, Adam
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from actprobe.models import paper_cnn
from actprobe.training import LoopResult, TrainStep, run_loop

WORKLOADS = ("paper-cnn", "resnet50", "transformer", "wide-100", "wide-1000")
# many small sites: 50 or 500 × (Linear 64, ReLU), batch 32 — where per-site Python dominates


@dataclass
class Workload:
    """A model, its training step (actprobe's ``TrainStep``) and one fixed batch on the device."""

    name: str
    model: nn.Module
    train_step: TrainStep
    batch: tuple[Any, torch.Tensor]

    def step(self) -> torch.Tensor:
        """One training step on the batch; returns the loss (a device tensor)."""
        return self.train_step(self.batch).loss

    def run(self, steps: int, probe: Any = None) -> LoopResult:
        """``steps`` steps through actprobe's training loop, the probe stepped after each."""
        return run_loop(self.train_step, lambda epoch: [self.batch] * steps, probe=probe, epochs=1)


def has_parameters_leaf(name: str, module: nn.Module) -> bool:
    """The reference harness's selection: every leaf module that owns parameters."""
    return next(module.children(), None) is None and next(module.parameters(recurse=False), None) is not None


def hooked(model: nn.Module) -> list[nn.Module]:
    return [m for n, m in model.named_modules() if has_parameters_leaf(n, m)]


def make(name: str, device: torch.device, batch: int | None = None, *, smoke: bool = False) -> Workload:
    """A fresh copy of a workload (same seed: same weights and inputs for every copy).

    ``smoke`` shrinks the inputs (ResNet-50 on 64×64 images, a 2-layer d=64 transformer on 32
    tokens), so that the benchmark's code can be checked on a CPU in seconds; its times mean nothing.
    """
    torch.manual_seed(0)
    if name == "paper-cnn":
        return _classifier(name, paper_cnn().to(device), (batch or 256, 1, 28, 28), 10, device,
                           autocast=False, channels_last=False, sgd=False)
    if name == "resnet50":
        from torchvision.models import resnet50

        model = resnet50(num_classes=1000).to(device, memory_format=torch.channels_last)
        side = 64 if smoke else 224
        return _classifier(name, model, (batch or 128, 3, side, side), 1000, device,
                           autocast=True, channels_last=True, sgd=True)
    if name == "transformer":
        return _transformer(device, batch or 16, smoke)
    if name in ("wide-100", "wide-1000"):
        pairs = int(name.split("-")[1]) // 2
        model = nn.Sequential(*[m for _ in range(pairs) for m in (nn.Linear(64, 64), nn.ReLU())]).to(device)
        for module in model:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        return _classifier(name, model, (batch or 32, 64), 64, device, autocast=False, channels_last=False,
                           sgd=False)
    raise ValueError(f"unknown workload {name!r}; available: {', '.join(WORKLOADS)}")


def hooked_bytes(workload: Workload, select: Callable[[str, nn.Module], bool]) -> int:
    """Bytes of the selected modules' outputs in one step (hooks removed afterwards)."""
    sizes: list[int] = []
    handles = [m.register_forward_hook(lambda mod, a, out: sizes.append(out.numel() * out.element_size()))
               for n, m in workload.model.named_modules() if select(n, m) and n]
    workload.step()
    for handle in handles:
        handle.remove()
    return sum(sizes)


def _classifier(name: str, model: nn.Module, shape: tuple[int, ...], classes: int, device: torch.device, *,
                autocast: bool, channels_last: bool, sgd: bool) -> Workload:
    x = torch.randn(shape, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (shape[0],), device=device)
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if sgd
           else torch.optim.Adam(model.parameters(), lr=1e-3))
    return Workload(name, model, TrainStep(model, opt, autocast=torch.bfloat16 if autocast else None), (x, y))


def _squared_output(outputs: torch.Tensor, targets: object) -> torch.Tensor:
    return outputs.float().square().mean()


def _transformer(device: torch.device, batch: int, smoke: bool) -> Workload:
    width, heads, layers, tokens = (64, 4, 2, 32) if smoke else (1024, 16, 12, 512)
    layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).to(device)
    x = torch.randn(batch, tokens, width, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    step = TrainStep(model, opt, _squared_output, autocast=torch.bfloat16)
    return Workload("transformer", model, step, (x, None))
