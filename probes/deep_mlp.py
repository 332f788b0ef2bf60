"""A 20-layer MLP under PyTorch's default init, checked at initialisation (no data, no training).

    actprobe run probes/deep_mlp.py

nn.Linear's default init (kaiming_uniform_ with a=√5) gives weights of variance 1/(3·fan_in): each
layer keeps a third of its input's variance and the ReLU halves it again, so the signal shrinks
by about ×0.4 per layer until the biases are all that is left. The init check feeds standardised
random inputs (mean 0, std 1), the paper's setting for its Fig. 3–5.
"""

from torch import nn

WIDTH = 256
LAYERS = 20
input_shape = (784,)  # one sample: a flattened 28×28 image


def model():
    layers = []
    for i in range(LAYERS - 1):
        layers += [nn.Linear(input_shape[0] if i == 0 else WIDTH, WIDTH), nn.ReLU()]
    layers.append(nn.Linear(WIDTH, 10))
    return nn.Sequential(*layers)
