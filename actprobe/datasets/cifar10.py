"""CIFAR-10: image folders (JPEG/PNG), torchvision's binary batches, or tarballs of either; else a download.

Read directly from a ``.tar.gz`` without extracting it, so a read-only data folder works as it is.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from .._text import one_line
from ..errors import DataError
from .imagedata import ImageDataset, ImageSplit
from .locate import Place, find

NAME = "cifar10"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BATCHES_FOLDER = "cifar-10-batches-py"  # torchvision's layout
BATCH_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_TREE_FOLDERS = (".", "cifar10", "cifar-10", "CIFAR10", "cifar10-jpeg")
_TARBALL_PATTERNS = ("cifar*10*.tar.gz", "cifar*10*.tgz", "cifar*10*.tar")
_JPEG_MAGIC = b"\xff\xd8"


def _tree_folder(root: Path) -> Path | None:
    for sub in _TREE_FOLDERS:
        folder = root / sub
        if all((folder / split / c).is_dir() for split in ("train", "test") for c in CLASSES):
            return folder.resolve()
    return None


def _batches_folder(root: Path) -> Path | None:
    folder = root / BATCHES_FOLDER
    names = [n for files in BATCH_FILES.values() for n in files]
    return folder.resolve() if all((folder / n).is_file() for n in names) else None


def _decode(blobs: list[bytes], where: str) -> torch.Tensor:
    """Encoded images → (N, 3, 32, 32) uint8: torchvision's batched JPEG decoder, else PIL."""
    try:
        images = _decode_torchvision(blobs)
    except (ImportError, AttributeError):  # torchvision without its (deprecated) image decoders
        images = None
    except RuntimeError as exc:
        raise DataError(f"cannot decode an image of CIFAR-10 in {where}: {one_line(exc)}") from None
    if images is None:
        images = [_decode_pil(blob, where) for blob in blobs]
    if any(tuple(im.shape) != (3, 32, 32) for im in images):
        raise DataError(f"CIFAR-10 images in {where} must be 32x32 RGB")
    return torch.stack(images) if images else torch.empty(0, 3, 32, 32, dtype=torch.uint8)


def _decode_torchvision(blobs: list[bytes]) -> list[torch.Tensor] | None:
    if not blobs or not all(b[:2] == _JPEG_MAGIC for b in blobs):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated since torchvision 0.29; PIL is the fallback
        from torchvision.io import ImageReadMode, decode_jpeg

        tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
        return decode_jpeg(tensors, mode=ImageReadMode.RGB)  # batched: about 3 times faster than PIL


def _decode_pil(blob: bytes, where: str) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as image:
            array = np.asarray(image.convert("RGB"))  # (H, W, 3)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot decode an image of CIFAR-10 in {where}: {one_line(exc)}") from None
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def _from_named_images(items: Iterable[tuple[str, str, bytes]], where: str) -> dict[str, ImageSplit]:
    """``items``: (split, class name, encoded image) triples → the two splits, in name order."""
    collected: dict[str, list[tuple[int, bytes]]] = {"train": [], "test": []}
    for split, cls, blob in items:
        collected[split].append((CLASSES.index(cls), blob))
    splits = {}
    for split, pairs in collected.items():
        if not pairs:
            raise DataError(f"CIFAR-10 in {where} has no {split} images")
        images = _decode([b for _, b in pairs], where)
        splits[split] = ImageSplit(images, torch.tensor([label for label, _ in pairs], dtype=torch.int64))
    return splits


def _image_member(name: str) -> tuple[str, str] | None:
    """``.../train/cat/0001.jpg`` → ("train", "cat"), for names inside a tree or a tarball."""
    parts = PurePosixPath(name).parts
    if len(parts) >= 3 and parts[-3] in ("train", "test") and parts[-2] in CLASSES:
        return parts[-3], parts[-2]
    return None


def _read_tree(folder: Path) -> dict[str, ImageSplit]:
    def items() -> Iterator[tuple[str, str, bytes]]:
        for split in ("train", "test"):
            for cls in CLASSES:
                for path in sorted((folder / split / cls).iterdir()):
                    if path.is_file() and not path.name.startswith("."):
                        yield split, cls, path.read_bytes()
    return _from_named_images(items(), str(folder))


def _unpickle_batch(f, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as exc:
        raise DataError(f"cannot read a CIFAR-10 batch in {where}: {one_line(exc)}") from None
    return data, labels


def _splits_from_batches(batches: dict[str, tuple[np.ndarray, np.ndarray]], where: str) -> dict[str, ImageSplit]:
    splits = {}
    for split, names in BATCH_FILES.items():
        missing = [n for n in names if n not in batches]
        if missing:
            raise DataError(f"CIFAR-10 in {where} lacks {', '.join(missing)}")
        images = np.concatenate([batches[n][0] for n in names])
        labels = np.concatenate([batches[n][1] for n in names])
        splits[split] = ImageSplit(torch.from_numpy(images), torch.from_numpy(labels))
    return splits


def _read_batches(folder: Path) -> dict[str, ImageSplit]:
    batches = {}
    for name in (n for files in BATCH_FILES.values() for n in files):
        with open(folder / name, "rb") as f:
            batches[name] = _unpickle_batch(f, str(folder))
    return _splits_from_batches(batches, str(folder))


def _read_tarball(path: Path) -> dict[str, ImageSplit] | None:
    """Stream a tarball once; None when it holds neither an image tree nor binary batches."""
    images: list[tuple[str, str, bytes]] = []
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    batch_names = {n for files in BATCH_FILES.values() for n in files}
    try:
        with tarfile.open(path, "r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                where = _image_member(member.name)
                name = PurePosixPath(member.name).name
                if where is not None:
                    images.append((*where, archive.extractfile(member).read()))
                elif name in batch_names and PurePosixPath(member.name).parent.name == BATCHES_FOLDER:
                    batches[name] = _unpickle_batch(archive.extractfile(member), str(path))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {one_line(exc)}") from None
    if images:
        return _from_named_images(images, str(path))
    if batches:
        return _splits_from_batches(batches, str(path))
    return None


def _find_in(root: Path) -> tuple[dict[str, ImageSplit], str] | None:
    folder = _batches_folder(root)
    if folder is not None:
        return _read_batches(folder), f"torchvision's binary batches in {folder}"
    folder = _tree_folder(root)
    if folder is not None:
        return _read_tree(folder), f"JPEG/PNG image folders in {folder}"
    for pattern in _TARBALL_PATTERNS:
        for tarball in sorted(root.glob(pattern)):
            splits = _read_tarball(tarball)
            if splits is not None:
                return splits, f"{tarball}"
    return None


def _look_in(place: Place) -> ImageDataset | None:
    found = _find_in(place.path) if place.path.is_dir() else None
    return None if found is None else _dataset(*found, place.origin)


def _download(cache: Path) -> ImageDataset:
    from torchvision.datasets import CIFAR10

    CIFAR10(str(cache), train=True, download=True)
    return _dataset(_read_batches(cache / BATCHES_FOLDER), f"torchvision's binary batches downloaded to {cache}",
                    "download")


def load_cifar10(root: str | Path | None = None, *, download: bool | None = None) -> ImageDataset:
    """Find CIFAR-10 and read it whole (about 8 s from the JPEG tarball on one core).

    Looks in each folder of ``locate.search_places(root)`` for torchvision's ``cifar-10-batches-py``,
    then ``train/`` and ``test/`` image folders (also under ``cifar10/``), then a ``cifar*10*.tar.gz``
    holding either; then downloads with torchvision unless downloads are off.

    Raises:
        DataError: nothing found; the message lists every place looked in.
    """
    found, looked = find(root, _look_in, _download, download)
    if found is not None:
        return found
    raise DataError("CIFAR-10 not found; looked in: " + "; ".join(looked) + ". Pass --data-root or set "
                    "ACTPROBE_DATA to a folder holding cifar-10-batches-py, train/ and test/ image folders, "
                    "or a cifar10*.tar.gz of either.")


def _dataset(splits: dict[str, ImageSplit], how: str, origin: str) -> ImageDataset:
    counts = f"{len(splits['train']):,} train + {len(splits['test']):,} test images"
    return ImageDataset(NAME, CLASSES, splits["train"], splits["test"], f"CIFAR-10 ({counts}), {how} ({origin})")
