"""Data sets: IDX files, the search order, Fashion-MNIST layouts, the packaged sample, CIFAR-10 in all its
forms (checked pixel for pixel against PIL and NumPy), and standardised batches."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from actprobe import datasets
from actprobe.datasets import cifar10, fashion_mnist, locate
from actprobe.datasets._idx import read_idx, write_idx
from actprobe.errors import DataError, OptionError

SHARED = Path(os.environ["ACTPROBE_DATA"]) if os.environ.get("ACTPROBE_DATA") else None
needs_shared_fashion = pytest.mark.skipif(SHARED is None or fashion_mnist.find_idx_folder(SHARED) is None,
                                          reason="ACTPROBE_DATA holds no Fashion-MNIST")
CIFAR_TARBALL = SHARED / "cifar10-jpeg.tar.gz" if SHARED else None
needs_shared_cifar = pytest.mark.skipif(CIFAR_TARBALL is None or not CIFAR_TARBALL.is_file(),
                                        reason="ACTPROBE_DATA holds no cifar10-jpeg.tar.gz")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real cache, no downloads, no data root from the environment, no data sets kept between tests."""
    monkeypatch.setenv("ACTPROBE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ACTPROBE_OFFLINE", "1")
    monkeypatch.delenv("ACTPROBE_DATA", raising=False)
    datasets._loaded.clear()
    yield
    datasets._loaded.clear()


def _sample_arrays():
    folder = fashion_mnist.SAMPLE_DIR
    return {name: read_idx(folder / f"{name}.gz") for pair in fashion_mnist.FILES.values() for name in pair}


def _write_fashion(folder: Path, gz: bool = True) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = _sample_arrays()
    for name, array in arrays.items():
        if gz:
            write_idx(folder / f"{name}.gz", array)
        else:
            with gzip.open(io.BytesIO(), "wb"):
                pass
            path = folder / f"{name}.gz"
            write_idx(path, array)
            (folder / name).write_bytes(gzip.decompress(path.read_bytes()))
            path.unlink()
    return arrays


# -- IDX --------------------------------------------------------------------------------------------
def test_idx_round_trip_and_header(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    assert raw[:4] == bytes([0, 0, 8, 3]) and int.from_bytes(raw[4:8], "big") == 7
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)
    write_idx(tmp_path / "b.gz", array)  # no timestamp: the same bytes every time
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def test_idx_damage_is_a_data_error(tmp_path):
    write_idx(tmp_path / "a.gz", np.zeros((4, 4), np.uint8))
    (tmp_path / "cut").write_bytes(gzip.decompress((tmp_path / "a.gz").read_bytes())[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "cut")
    (tmp_path / "text").write_text("hello")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "text")


# -- the packaged sample ----------------------------------------------------------------------------
def test_sample_is_stratified_and_labelled():
    sample = fashion_mnist.load_sample()
    assert sample.is_sample and "SAMPLE" in sample.source and "not the full set" in sample.source
    assert np.bincount(sample.train.labels.numpy()).tolist() == [300] * 10
    assert np.bincount(sample.test.labels.numpy()).tolist() == [100] * 10
    assert tuple(sample.train.images.shape) == (3000, 1, 28, 28)
    readme = (fashion_mnist.SAMPLE_DIR / "README.md").read_text()
    assert readme.startswith("# SAMPLE of Fashion-MNIST") and "MIT" in readme
    assert "Zalando SE" in (fashion_mnist.SAMPLE_DIR / "LICENSE").read_text()


@needs_shared_fashion
def test_sample_is_byte_for_byte_the_first_images_of_each_class_of_the_full_set():
    full = fashion_mnist.load_fashion_mnist(SHARED, download=False, sample=False)
    sample = fashion_mnist.load_sample()
    for split, per_class in fashion_mnist.SAMPLE_PER_CLASS.items():
        labels = full.split(split).labels.numpy()
        keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
        keep.sort()
        assert torch.equal(sample.split(split).images, full.split(split).images[keep])
        assert torch.equal(sample.split(split).labels, full.split(split).labels[keep])


@needs_shared_fashion
def test_full_set_read_from_the_shared_folder():
    data = datasets.load("fashion-mnist", SHARED)
    assert not data.is_sample and len(data.train) == 60_000 and len(data.test) == 10_000
    assert "full set" in data.source and str(SHARED.resolve()) in data.source


# -- where data sets are looked for -----------------------------------------------------------------
@pytest.mark.parametrize("layout", [".", "fashion-mnist", "FashionMNIST/raw", "plain"])
def test_fashion_mnist_layouts(tmp_path, layout):
    root = tmp_path / "root"
    folder = root / ("." if layout == "plain" else layout)
    arrays = _write_fashion(folder, gz=layout != "plain")
    data = datasets.load("fashion-mnist", root)
    assert not data.is_sample
    np.testing.assert_array_equal(data.train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_search_order_root_then_data_root_then_environment(tmp_path, monkeypatch):
    for name in ("a", "b", "c"):
        _write_fashion(tmp_path / name)
    monkeypatch.setenv("ACTPROBE_DATA", str(tmp_path / "c"))
    with datasets.use_data_root(tmp_path / "b"):
        assert "root argument" in datasets.load("fashion-mnist", tmp_path / "a").source
        assert "--data-root" in datasets.load("fashion-mnist").source
    assert "$ACTPROBE_DATA" in datasets.load("fashion-mnist").source
    places = [p.origin for p in locate.search_places(tmp_path / "a")]
    assert places == ["root argument", "$ACTPROBE_DATA", "download cache"]


def test_sample_is_the_fallback_and_says_where_it_looked(tmp_path):
    data = datasets.load("fashion-mnist", tmp_path / "nothing")
    assert data.is_sample
    assert any(str(tmp_path / "nothing") in note for note in data.notes)
    assert "download: turned off" in data.notes


def test_nothing_found_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTPROBE_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as info:
        fashion_mnist.load_fashion_mnist(tmp_path / "arg", download=False, sample=False)
    message = str(info.value)
    for place in (tmp_path / "arg", tmp_path / "env", tmp_path / "cache"):
        assert str(place) in message
    assert "\n" not in message
    with pytest.raises(DataError, match=r"CIFAR-10 not found; looked in: .*arg.*env.*cache.*download: turned off"):
        datasets.load("cifar10", tmp_path / "arg")


def test_unknown_data_set_names_the_valid_ones():
    with pytest.raises(OptionError, match="unknown data set 'mnist'; available: fashion-mnist, cifar10"):
        datasets.load("mnist")


# -- CIFAR-10 ---------------------------------------------------------------------------------------
def _cifar_arrays(per_class: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for split in ("train", "test"):
        labels = np.repeat(np.arange(10), per_class)
        out[split] = (rng.integers(0, 256, (labels.size, 3, 32, 32), dtype=np.uint8), labels)
    return out


def _write_png_tree(folder: Path, arrays) -> None:
    for split, (images, labels) in arrays.items():
        for i, (image, label) in enumerate(zip(images, labels)):
            target = folder / split / cifar10.CLASSES[label]
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(target / f"{i:04d}.png")


def _assert_same_images(data, arrays) -> None:
    for split, (images, labels) in arrays.items():
        got = data.split(split)
        # order within a class may differ from ours: compare as sorted sets of images per class
        for c in range(10):
            want = images[labels == c].reshape(int((labels == c).sum()), -1)
            have = got.images[got.labels == c].reshape(want.shape[0], -1).numpy()
            assert sorted(map(bytes, want)) == sorted(map(bytes, have))


def test_cifar10_from_png_image_folders(tmp_path):
    arrays = _cifar_arrays(3)
    _write_png_tree(tmp_path / "root" / "cifar10", arrays)
    data = datasets.load("cifar10", tmp_path / "root")
    assert "image folders" in data.source
    _assert_same_images(data, arrays)


def test_cifar10_from_a_tarball_of_image_folders_without_extracting(tmp_path):
    arrays = _cifar_arrays(2, seed=1)
    _write_png_tree(tmp_path / "tree", arrays)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar10-png.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "tree" / "train", arcname="train")
        archive.add(tmp_path / "tree" / "test", arcname="test")
    data = datasets.load("cifar10", root)
    assert str(root / "cifar10-png.tar.gz") in data.source
    _assert_same_images(data, arrays)
    assert sorted(p.name for p in root.iterdir()) == ["cifar10-png.tar.gz"]  # nothing extracted


def test_cifar10_from_torchvision_batches(tmp_path):
    arrays = _cifar_arrays(2, seed=2)
    folder = tmp_path / "root" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_images, train_labels = arrays["train"]
    parts = np.array_split(np.arange(len(train_labels)), 5)
    for k, part in enumerate(parts, start=1):
        batch = {b"data": train_images[part].reshape(len(part), -1), b"labels": train_labels[part].tolist()}
        (folder / f"data_batch_{k}").write_bytes(pickle.dumps(batch))
    test_images, test_labels = arrays["test"]
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": test_images.reshape(len(test_labels), -1),
                                                      b"labels": test_labels.tolist()}))
    data = datasets.load("cifar10", tmp_path / "root")
    assert "binary batches" in data.source
    np.testing.assert_array_equal(data.train.images.numpy(), train_images)  # batch order kept exactly
    np.testing.assert_array_equal(data.test.labels.numpy(), test_labels)


@needs_shared_cifar
@pytest.mark.slow
def test_cifar10_jpeg_tarball_matches_pil():
    data = datasets.load("cifar10", SHARED)
    assert len(data.train) == 50_000 and len(data.test) == 10_000
    assert np.bincount(data.train.labels.numpy()).tolist() == [5000] * 10
    with tarfile.open(CIFAR_TARBALL, "r:gz") as archive:
        member = archive.getmember("test/ship/0007.jpg")
        reference = np.asarray(Image.open(archive.extractfile(member)).convert("RGB")).transpose(2, 0, 1)
    ships = data.test.images[data.test.labels == cifar10.CLASSES.index("ship")].numpy().astype(int)
    difference = np.abs(ships - reference.astype(int)).reshape(len(ships), -1).max(axis=1)
    assert difference.min() <= 2  # libjpeg-turbo and PIL may round the IDCT differently


# -- standardised batches ---------------------------------------------------------------------------
def test_batches_are_standardised_with_training_statistics():
    data = fashion_mnist.load_sample()
    pixels = data.train.images.numpy().astype(np.float64)
    assert data.mean[0] == pytest.approx(pixels.mean(), rel=1e-12)
    assert data.std[0] == pytest.approx(pixels.std(), rel=1e-12)
    loader = data.batches("train", batch_size=512, shuffle=False)
    inputs = torch.cat([x for x, _ in loader]).double().numpy()
    assert abs(inputs.mean()) < 1e-6 and inputs.std() == pytest.approx(1.0, rel=1e-5)
    test_inputs = torch.cat([x for x, _ in data.batches("test", batch_size=512, shuffle=False)]).double().numpy()
    expected = (data.test.images.numpy().astype(np.float64) - pixels.mean()) / pixels.std()
    np.testing.assert_allclose(test_inputs, expected, rtol=1e-6, atol=1e-6)


def test_each_epoch_visits_every_image_once_in_its_own_reproducible_order():
    data = fashion_mnist.load_sample()
    loader = data.batches("train", batch_size=256, seed=3)
    first = torch.cat([y for _, y in loader])
    second = torch.cat([y for _, y in loader])
    assert len(loader) == 12 and first.numel() == 3000
    assert torch.bincount(first).tolist() == [300] * 10 and not torch.equal(first, second)
    again = data.batches("train", batch_size=256, seed=3)
    assert torch.equal(torch.cat([y for _, y in again]), first)
    assert len(data.batches("train", batch_size=256, drop_last=True)) == 11


def test_per_class_subset_and_seed_from_torch():
    data = fashion_mnist.load_sample()
    small = data.batches("test", batch_size=7, per_class=3, shuffle=False)
    labels = torch.cat([y for _, y in small])
    assert small.images == 30 and torch.bincount(labels).tolist() == [3] * 10
    assert "30 of them used" in small.source
    torch.manual_seed(11)
    assert data.batches().seed == 11
    with pytest.raises(OptionError, match="batch_size must be a positive integer"):
        data.batches(batch_size=0)
