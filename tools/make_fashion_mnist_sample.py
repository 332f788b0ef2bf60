"""Rebuild the Fashion-MNIST sample packaged in actprobe/datasets/fashion_mnist_sample/.

    python tools/make_fashion_mnist_sample.py --data-root ../shared/data

The sample is the first 300 training and first 100 test images of each class, in the original
order, written as gzip IDX files with reproducible bytes. tests/test_datasets.py checks it against
the full set whenever the full set is available.
"""

from __future__ import annotations

import argparse

from actprobe.datasets._idx import write_idx
from actprobe.datasets.fashion_mnist import FILES, SAMPLE_DIR, SAMPLE_PER_CLASS, load_fashion_mnist
from actprobe.datasets.imagedata import first_per_class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="a folder holding the full Fashion-MNIST")
    args = parser.parse_args()
    full = load_fashion_mnist(args.data_root, download=False, sample=False)
    for split, (images_name, labels_name) in FILES.items():
        data = full.split(split)
        keep = first_per_class(data.labels.numpy(), SAMPLE_PER_CLASS[split])
        write_idx(SAMPLE_DIR / f"{images_name}.gz", data.images[keep, 0].numpy())
        write_idx(SAMPLE_DIR / f"{labels_name}.gz", data.labels[keep].numpy())
        print(f"{split}: {len(keep)} images from {full.source}")


if __name__ == "__main__":
    main()
