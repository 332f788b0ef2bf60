"""`actprobe recipe`: list, and a reduced run of each recipe (a few hundred images, one or two epochs),
checked through the files it writes: run files read with h5py, PNG figures, Markdown tables."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import actprobe
from actprobe.cli import app
from actprobe.init import PAPER_SCHEMES
from actprobe.nn import ACTIVATIONS
from conftest import assert_one_line_error

pytestmark = pytest.mark.slow  # reduced recipes train on the real data sets

RUNNER = CliRunner()
ENV = {"COLUMNS": "200", "ACTPROBE_OFFLINE": "1"}
# CIFAR-10 only where a local copy is named; Fashion-MNIST always (the packaged sample at worst).
DATA = ("fashion-mnist", "cifar10") if os.environ.get("ACTPROBE_DATA") else ("fashion-mnist",)
REQUIRED_ATTRS = ("recipe", "data", "init", "activation", "seed", "optimizer", "lr", "epochs", "batch_size")
EPOCH_DATASETS = ("epoch", "steps", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


def invoke(*args: object):
    return RUNNER.invoke(app, ["recipe", *(str(a) for a in args)], env=ENV)


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100, path
    assert image[..., :3].std() > 0.01, f"{path} is blank"


def attrs(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def test_recipe_list_names_every_recipe():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.output.splitlines() if line.strip()]
    assert names == ["toy", "init", "wib", "paper"]
    assert "Fig. 10–13" in result.output


@pytest.mark.parametrize("args, message", [
    (("nosuch",), "unknown recipe 'nosuch'"),
    (("wib", "--data", "mnist"), "unknown data set 'mnist'"),
    (("wib", "--epochs", "0"), "--epochs must be a positive integer"),
    (("init", "--per-class", "-3"), "--per-class must be a positive integer"),
    (("wib", "--lr", "-1"), "--lr must be a positive number"),
    (("toy", "--epochs", "x"), "Invalid value for '--epochs'"),
])
def test_bad_options_give_one_line_and_exit_2(tmp_path, args, message):
    assert_one_line_error(invoke(*args, "--out-dir", tmp_path / "out"), message)
    assert not (tmp_path / "out").exists()


def test_toy_reduced(tmp_path):
    out = tmp_path / "out"
    result = invoke("toy", "--experiments", 20, "--width", 400, "--depth", 6, "--out-dir", out)
    assert result.exit_code == 0, result.output
    files = sorted((out / "toy").glob("*.h5"))
    assert len(files) == 12
    for path in files:
        a = attrs(path)
        assert a["recipe"] == "toy" and a["data"] == "standard-normal" and a["experiments"] == 20
        assert set(REQUIRED_ATTRS) <= set(a)
    # Theory (float64 formulas written here): Eq. 5 keeps std 1; ReLU under Kaiming: mean √2/√(2π), std
    # √(1 − 1/π); WIB-ReLU centres it; N(0,1) weights give std √n.
    def stat(name: str, stat: str) -> float:
        run = actprobe.read(out / "toy" / f"{name}.h5")
        return float(run.stats[stat][:, -1].astype(np.float64).mean())

    assert stat("linear-normal", "std") == pytest.approx(20.0, rel=0.05)
    assert stat("linear-eq5", "std") == pytest.approx(1.0, rel=0.05)
    assert stat("relu-kaiming", "mean") == pytest.approx(np.sqrt(2) / np.sqrt(2 * np.pi), rel=0.05)
    assert stat("relu-kaiming", "std") == pytest.approx(np.sqrt(1 - 1 / np.pi), rel=0.05)
    assert abs(stat("wib-kaiming", "mean")) < 0.05
    deep = actprobe.read(out / "toy" / "deep-linear-torch-default.h5")
    assert deep.rows == 20 and len(deep.sites) == 6 and deep.attrs["width"] == 400
    ratio = np.median(deep.stats["std"][:, -1]) / np.median(deep.stats["std"][:, 0])
    assert ratio == pytest.approx(3 ** -2.5, rel=0.15)  # ×1/√3 per layer over 5 layers
    figures = sorted((out / "toy" / "figures").glob("*.png"))
    assert [p.name for p in figures] == ["toy-eq4-deep.png", "toy-fig3.png", "toy-fig4.png", "toy-fig5.png"]
    for figure in figures:
        assert_png(figure)
    summary = (out / "toy" / "summary.md").read_text()
    assert "| ReLU, Kaiming weights (Fig. 4b) |" in summary and "![toy-fig3](figures/toy-fig3.png)" in summary


def test_init_reduced(tmp_path):
    out = tmp_path / "out"
    result = invoke("init", "--data", "fashion-mnist", "--per-class", 10, "--iterations", 3, "--batch-size", 32,
                    "--out-dir", out)
    assert result.exit_code == 0, result.output
    for scheme in PAPER_SCHEMES:
        path = out / "init" / f"fashion-mnist-{scheme}-relu-seed0.h5"
        a = attrs(path)
        assert {k: a[k] for k in REQUIRED_ATTRS} == {
            "recipe": "init", "data": "fashion-mnist", "init": scheme, "activation": "relu", "seed": 0,
            "optimizer": "adam", "lr": 0.001, "epochs": 1, "batch_size": 32}
        assert a["complete"] and a["per_class"] == 10 and a["train_images"] == 100 and a["val_images"] == 100
        run = actprobe.read(path)
        assert run.rows == 3 and list(run.step) == [0, 1, 2]
        assert set(run.epochs) == set(EPOCH_DATASETS) and list(run.epochs["steps"]) == [3]
        # 3 steps of 32 images: the epoch's train loss is the plain mean of the 3 recorded losses
        assert run.epochs["train_loss"][0] == pytest.approx(run.scalars["loss"].mean(), rel=1e-6)
        assert 0 <= run.epochs["val_accuracy"][0] <= 1
    summary = (out / "init" / "summary.md").read_text()
    assert "| fashion-mnist | torch-default |" in summary
    rows = {line.split("|")[2].strip(): line for line in summary.splitlines() if line.startswith("| fashion-mnist")}
    assert rows["torch-default"].rstrip(" |").endswith("std shrinks with depth")
    assert rows["kaiming"].rstrip(" |").endswith("keeps std near 1")
    assert rows["eq6"].rstrip(" |").endswith("std grows with depth")
    for name in ("init-fashion-mnist-mean-std.png", "init-fashion-mnist-near-zero.png"):
        assert_png(out / "init" / "figures" / name)


def test_wib_reduced_and_reused(tmp_path):
    out = tmp_path / "out"
    args = ("wib", "--data", ",".join(DATA), "--per-class", 10, "--epochs", 2, "--seeds", 2, "--batch-size", 64,
            "--out-dir", out)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    files = sorted((out / "wib").glob("*.h5"))
    assert len(files) == len(DATA) * len(ACTIVATIONS) * 2
    for data in DATA:
        for activation in ACTIVATIONS:
            for seed in (0, 1):
                path = out / "wib" / f"{data}-kaiming-{activation}-seed{seed}.h5"
                a = attrs(path)
                assert (a["data"], a["init"], a["activation"], a["seed"], a["epochs"]) == (
                    data, "kaiming", activation, seed, 2)
                assert ("wib_mu" in a) == activation.startswith("wib"), path
                run = actprobe.read(path)
                assert list(run.epochs["epoch"]) == [0, 1] and list(run.epochs["steps"]) == [2, 4]
                assert list(run.step) == [0]  # every 5th step of 4
        for name in ("curves", "near-zero", "mean-std"):
            assert_png(out / "wib" / "figures" / f"wib-{data}-{name}.png")
    summary = (out / "wib" / "summary.md").read_text()
    assert sum(line.startswith("| ") and " | wib-relu" in line for line in summary.splitlines()) == 2 * len(DATA)
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    again = invoke(*args)
    assert again.exit_code == 0 and again.output.count("(reused)") == len(files), again.output
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    fresh = invoke(*args[:-2], "--seeds", 1, "--fresh", "--out-dir", out)
    assert fresh.exit_code == 0 and "(reused)" not in fresh.output


def test_paper_reduced_writes_the_report(tmp_path):
    out = tmp_path / "out"
    result = invoke("paper", "--data", ",".join(DATA), "--per-class", 10, "--epochs", 1, "--seeds", 1,
                    "--iterations", 2, "--experiments", 5, "--batch-size", 64, "--out-dir", out)
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    for heading in ("## The paper's claims beside ours", "## Recipe `toy`", "## Recipe `init`", "## Recipe `wib`",
                    "## Training settings"):
        assert heading in report
    assert "REDUCED: 10 images per class" in report and "torch " in report and "machine:" in report
    links = [line.split("](", 1)[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert len(links) == 4 + 2 * len(DATA) + 3 * len(DATA)
    for link in links:
        assert_png(out / link)
    settings = sorted((out / "settings").glob("*.h5"))
    assert len(settings) == 2 * len(DATA)
    assert all(attrs(p)["lr"] == 0.4 and attrs(p)["recipe"] == "settings" for p in settings)
    assert "| Fig. 12: Fashion-MNIST with WIB-ReLU (wib-relu-fixed), last epoch |" in report


def test_a_missing_data_set_is_one_line_and_nothing_written(tmp_path):
    env = {**ENV, "ACTPROBE_DATA": None, "HOME": str(tmp_path), "ACTPROBE_CACHE": str(tmp_path / "cache"),
           "XDG_CACHE_HOME": None}
    result = RUNNER.invoke(app, ["recipe", "wib", "--data", "cifar10", "--out-dir", str(tmp_path / "out")], env=env)
    assert_one_line_error(result, "CIFAR-10 not found", "download: turned off")
    assert not (tmp_path / "out" / "wib").exists()


def test_results_document_links_only_figures_that_are_committed():
    root = Path(__file__).resolve().parents[2] / "docs"
    text = (root / "RESULTS.md").read_text()
    links = [line.split("](", 1)[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(links) == 14
    for link in links:
        assert (root / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link
