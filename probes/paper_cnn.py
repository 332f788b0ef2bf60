"""The WIB-ReLU paper's reference CNN (Fig. 6) on Fashion-MNIST, with PyTorch's default initialisation.

    actprobe run probes/paper_cnn.py [--steps 300] [--data-root DIR]

Fashion-MNIST comes from --data-root, $ACTPROBE_DATA, a torchvision download, or (offline) the
sample packaged with actprobe; the output says which. Inputs are standardised to mean 0 and std 1,
as in the paper. Under the default init the activation std shrinks layer after layer.
"""

import torch

from actprobe import datasets
from actprobe.models import paper_cnn


def model():
    return paper_cnn(in_channels=1, classes=10)


def data():
    return datasets.loader("fashion-mnist", batch_size=256)


def optimizer(params):
    return torch.optim.Adam(params, lr=1e-3)
