"""Data sets for model files and recipes: Fashion-MNIST and CIFAR-10, standardised as in the WIB-ReLU paper.

    from actprobe import datasets
    train = datasets.loader("fashion-mnist", batch_size=256)       # (inputs, targets) batches
    data = datasets.load("cifar10")                                 # both splits, in memory

Each is looked for in ``root``, the CLI's ``--data-root``, ``$ACTPROBE_DATA`` and the download cache,
then downloaded with torchvision; Fashion-MNIST falls back on a small sample packaged with actprobe,
so that it works offline. ``source`` on a data set or loader says which data was used.

May import: torch, torchvision, NumPy, ``actprobe.errors`` and ``actprobe._checks``. Nothing else of
actprobe: model files, the recipes and the CLI use it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import OptionError
from .cifar10 import load_cifar10
from .fashion_mnist import load_fashion_mnist
from .imagedata import BatchLoader, ImageDataset, ImageSplit, first_per_class
from .locate import ENV_CACHE, ENV_DATA, ENV_OFFLINE, cache_dir, search_places, use_data_root

LOADERS: dict[str, Callable[..., ImageDataset]] = {
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}
NAMES = tuple(LOADERS)

_loaded: dict[tuple, ImageDataset] = {}


def load(name: str, root: str | Path | None = None, *, download: bool | None = None) -> ImageDataset:
    """Find and read a data set by name (``fashion-mnist`` or ``cifar10``); kept in memory for reuse.

    Raises:
        OptionError: an unknown name.
        DataError: the data set is nowhere to be found; the message lists where it looked.
    """
    if name not in LOADERS:
        raise OptionError(f"unknown data set {name!r}; available: {', '.join(NAMES)}")
    key = (name, tuple(str(p.path) for p in search_places(root)), download)
    if key not in _loaded:
        _loaded[key] = LOADERS[name](root, download=download)
    return _loaded[key]


def loader(name: str, split: str = "train", *, batch_size: int = 256, shuffle: bool | None = None,
           seed: int | None = None, per_class: int | None = None, root: str | Path | None = None,
           download: bool | None = None) -> BatchLoader:
    """Standardised ``(inputs, targets)`` batches of one split of a data set (shuffled for ``train``)."""
    shuffle = split == "train" if shuffle is None else shuffle
    return load(name, root, download=download).batches(split, batch_size=batch_size, shuffle=shuffle,
                                                       seed=seed, per_class=per_class)


__all__ = [
    "ENV_CACHE", "ENV_DATA", "ENV_OFFLINE", "NAMES", "BatchLoader", "ImageDataset", "ImageSplit",
    "cache_dir", "first_per_class", "load", "loader", "search_places", "use_data_root",
]
