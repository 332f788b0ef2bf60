"""Fashion-MNIST: the four original IDX files found locally, downloaded by torchvision, or a packaged sample.

Fashion-MNIST is by Han Xiao, Kashif Rasul and Roland Vollgraf, Zalando SE (2017), MIT licence.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DataError
from ._idx import read_idx
from .imagedata import ImageDataset, ImageSplit
from .locate import Place, find

NAME = "fashion-mnist"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SAMPLE_DIR = Path(__file__).with_name("fashion_mnist_sample")
SAMPLE_PER_CLASS = {"train": 300, "test": 100}
FULL_SIZE = {"train": 60_000, "test": 10_000}
# Layouts a folder may use: the files directly, Debian's/our folder name, torchvision's.
_SUBFOLDERS = (".", "fashion-mnist", "fashion_mnist", "FashionMNIST/raw")


def _file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_idx_folder(root: Path) -> Path | None:
    """The folder under ``root`` holding all four IDX files (plain or ``.gz``), if any."""
    for sub in _SUBFOLDERS:
        folder = root / sub
        if all(_file(folder, n) for pair in FILES.values() for n in pair):
            return folder.resolve()
    return None


def read_idx_folder(folder: Path, source: str, is_sample: bool = False,
                    notes: tuple[str, ...] = ()) -> ImageDataset:
    splits = {}
    for split, (images_name, labels_name) in FILES.items():
        images = read_idx(_file(folder, images_name))  # (N, 28, 28)
        labels = read_idx(_file(folder, labels_name))  # (N,)
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(f"Fashion-MNIST {split} files in {folder} do not match: images {images.shape}, "
                            f"labels {labels.shape}")
        splits[split] = ImageSplit(torch.from_numpy(images.copy()).unsqueeze(1),
                                   torch.from_numpy(labels.astype("int64")))
    return ImageDataset(NAME, CLASSES, splits["train"], splits["test"], source, is_sample, notes)


def _describe(dataset_folder: Path, how: str) -> str:
    return f"Fashion-MNIST, full set (60,000 train + 10,000 test images), {how} {dataset_folder}"


def _look_in(place: Place) -> ImageDataset | None:
    folder = find_idx_folder(place.path)
    return None if folder is None else read_idx_folder(folder, _describe(folder, f"IDX files from {place.origin}:"))


def _download(cache: Path) -> ImageDataset:
    from torchvision.datasets import FashionMNIST

    for train in (True, False):
        FashionMNIST(str(cache), train=train, download=True)
    folder = find_idx_folder(cache)
    if folder is None:
        raise DataError(f"the download to {cache} did not leave the IDX files")
    return read_idx_folder(folder, _describe(folder, "downloaded by torchvision to"))


def load_fashion_mnist(root: str | Path | None = None, *, download: bool | None = None,
                       sample: bool = True) -> ImageDataset:
    """Find Fashion-MNIST and read it whole: local folders first, then a download, then the sample.

    Args:
        root: a folder to look in before the usual places (``locate.search_places``).
        download: try torchvision's download when no local copy is found (default: unless
            ``$ACTPROBE_OFFLINE`` is set).
        sample: fall back on the packaged sample (3,000 train + 1,000 test images) when the full
            set is neither found nor downloadable. With ``sample=False`` that is an error.

    Raises:
        DataError: nothing found; the message lists every place looked in.
    """
    found, looked = find(root, _look_in, _download, download)
    if found is not None:
        return found
    if sample:
        return load_sample(tuple(looked))
    raise DataError("Fashion-MNIST not found; looked in: " + "; ".join(looked)
                    + ". Pass --data-root or set ACTPROBE_DATA to a folder holding the four IDX files.")


def load_sample(notes: tuple[str, ...] = ()) -> ImageDataset:
    """The stratified sample of Fashion-MNIST packaged with actprobe (see its README.md)."""
    counts = ", ".join(f"{SAMPLE_PER_CLASS[s] * len(CLASSES):,} of {FULL_SIZE[s]:,} {s}"
                       for s in ("train", "test"))
    source = (f"Fashion-MNIST SAMPLE packaged with actprobe ({counts} images, the first "
              f"{SAMPLE_PER_CLASS['train']}/{SAMPLE_PER_CLASS['test']} of each class), not the full set")
    return read_idx_folder(SAMPLE_DIR, source, is_sample=True, notes=notes)


__all__ = ["CLASSES", "NAME", "find_idx_folder", "load_fashion_mnist", "load_sample"]
