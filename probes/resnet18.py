"""torchvision's ResNet-18 on CIFAR-10 (10 classes, 32×32 inputs standardised per channel).

    actprobe run probes/resnet18.py --steps 50 [--device cuda] [--data-root DIR]

CIFAR-10 comes from --data-root or $ACTPROBE_DATA (torchvision's binary batches, train/ and test/
image folders, or a cifar10*.tar.gz of either), else a torchvision download. One epoch is 391
steps: on a CPU, pass --steps.
"""

import torch
from torchvision.models import resnet18

from actprobe import datasets


def model():
    return resnet18(num_classes=10)


def data():
    return datasets.loader("cifar10", batch_size=128)


def optimizer(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
