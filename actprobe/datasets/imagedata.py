"""``ImageDataset``: an image classification data set held in memory, and standardised batches of it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from .._checks import positive_int
from ..errors import OptionError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class ImageSplit:
    """One split: ``images`` (N, C, H, W) uint8 and ``labels`` (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def first_per_class(labels: torch.Tensor | np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` items of each class, in the data set's own order."""
    labels = np.asarray(labels)
    picked = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


@dataclass(frozen=True)
class ImageDataset:
    """A data set's two splits, its class names, and where it came from.

    ``mean`` and ``std`` are per channel over the training images; ``batches`` standardises every
    split with them, so inputs have mean 0 and std 1 as in the WIB-ReLU paper.
    """

    name: str
    classes: tuple[str, ...]
    train: ImageSplit
    test: ImageSplit
    source: str
    is_sample: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    def split(self, name: str) -> ImageSplit:
        if name not in SPLITS:
            raise OptionError(f"unknown split {name!r}; available: {', '.join(SPLITS)}")
        return self.train if name == "train" else self.test

    @cached_property
    def _moments(self) -> tuple[np.ndarray, np.ndarray]:
        # Exact: a histogram of the 256 pixel values per channel, then float64 moments of it.
        images = self.train.images
        values = np.arange(256, dtype=np.float64)
        mean, std = [], []
        for c in range(images.shape[1]):
            counts = torch.bincount(images[:, c].reshape(-1), minlength=256).numpy().astype(np.float64)
            m = (counts @ values) / counts.sum()
            mean.append(m)
            std.append(np.sqrt((counts @ (values - m) ** 2) / counts.sum()))
        return np.array(mean), np.array(std)

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean of the training images, in pixel units (0–255)."""
        return tuple(float(v) for v in self._moments[0])

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation of the training images, in pixel units (0–255)."""
        return tuple(float(v) for v in self._moments[1])

    def batches(self, split: str = "train", *, batch_size: int = 256, shuffle: bool = True, seed: int | None = None,
                per_class: int | None = None, drop_last: bool = False) -> BatchLoader:
        """Standardised ``(inputs, targets)`` batches of one split; see ``BatchLoader``."""
        return BatchLoader(self, split, batch_size=batch_size, shuffle=shuffle, seed=seed,
                           per_class=per_class, drop_last=drop_last)


class BatchLoader:
    """Iterates ``(inputs (B, C, H, W) float32, targets (B,) int64)`` over a split, standardised.

    Each pass over the loader is one epoch; with ``shuffle`` every epoch has its own order, drawn
    from ``seed`` (default: torch's seed, which ``actprobe run --seed`` sets), so two loaders with the
    same arguments give the same batches. ``per_class``
    keeps only the first that many images of each class (reduced runs). ``source`` says what data
    this is, for reports.
    """

    def __init__(self, dataset: ImageDataset, split: str = "train", *, batch_size: int = 256,
                 shuffle: bool = True, seed: int | None = None, per_class: int | None = None,
                 drop_last: bool = False) -> None:
        positive_int("batch_size", batch_size)
        positive_int("per_class", per_class, allow_none=True)
        data = dataset.split(split)
        self.dataset = dataset
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = torch.initial_seed() % 2**31 if seed is None else seed
        self.drop_last = drop_last
        if per_class is None:
            self._images, self._labels = data.images, data.labels
        else:
            keep = torch.from_numpy(first_per_class(data.labels.numpy(), per_class))
            self._images, self._labels = data.images[keep], data.labels[keep]
        self._mean = torch.tensor(dataset.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(dataset.std, dtype=torch.float32).view(1, -1, 1, 1)
        self._epoch = 0

    @property
    def images(self) -> int:
        """How many images one epoch goes through."""
        return int(self._labels.shape[0])

    @property
    def source(self) -> str:
        subset = "" if self.images == len(self.dataset.split(self.split)) else f", {self.images:,} of them used"
        return f"{self.dataset.source} [{self.split} split{subset}]"

    @property
    def notes(self) -> tuple[str, ...]:
        """Where the full data set was looked for, when a fallback (the sample) was used."""
        return self.dataset.notes

    def __len__(self) -> int:
        full, rest = divmod(self.images, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self._epoch)
            order = torch.randperm(self.images, generator=generator)
        else:
            order = torch.arange(self.images)
        self._epoch += 1
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            inputs = (self._images[index].to(torch.float32) - self._mean) / self._std
            yield inputs, self._labels[index]
