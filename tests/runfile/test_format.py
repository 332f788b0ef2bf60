"""docs/FORMAT.md matches what the code writes: a plain h5py reader follows the document."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import actprobe
from actprobe.runfile.format import STATISTICS
from conftest import format_doc_table as _table, paper_cnn, train_steps

DOC = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("format") / "run.h5"
    model = paper_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with actprobe.Probe(model, path, flush_every=4, meta={"recipe": "doc-test"}, grads=True, params=True,
                        optimizer=opt, hist_every=2) as probe:
        train_steps(model, 5, probe=probe, optimizer=opt)
    return path


def test_every_documented_dataset_exists_with_its_dtype_and_shape(run_file):
    documented = _table("Datasets")
    with h5py.File(run_file, "r", libver="latest", swmr=True) as f:
        T, S = f["step"].shape[0], f["sites"].shape[0]
        dims = {"T": T, "S": S, "E": f["graph/edges"].shape[0], "U": f["graph/uncalled"].shape[0], "2": 2,
                "P": f["params"].shape[0], "H": f["hist/step"].shape[0], "B": f["hist/edges"].shape[0] - 1,
                "B+1": f["hist/edges"].shape[0]}
        names_in_file = set()
        f.visititems(lambda name, obj: names_in_file.add(name) if isinstance(obj, h5py.Dataset) else None)
        documented_names = set()
        for path, dtype, shape, _ in documented:
            matching = [n for n in names_in_file if re.fullmatch(path.replace("<name>", "[^/]+"), n)]
            assert matching, f"documented dataset {path} is not in the file"
            documented_names.update(matching)
            for name in matching:
                dataset = f[name]
                want_shape = tuple(dims[d.strip()] for d in shape.strip("[]").split(","))
                assert dataset.shape == want_shape, name
                if "string" in dtype:
                    info = h5py.check_string_dtype(dataset.dtype)
                    assert info is not None and info.encoding == "utf-8" and info.length is not None, name
                else:
                    assert dataset.dtype == np.dtype(dtype), name
        assert names_in_file == documented_names, "the file has datasets the document does not describe"


def test_documented_statistics_are_the_recorded_ones():
    documented = [row[0].split("/", 1)[1] for row in _table("Datasets") if row[0].startswith("stats/")]
    assert tuple(documented) == STATISTICS


def test_every_documented_attribute_exists(run_file):
    with h5py.File(run_file, "r", libver="latest", swmr=True) as f:
        for name, kind, _ in _table("Root attributes"):
            value = f.attrs[name]
            if kind == "str":
                assert isinstance(value, str), name
            elif kind == "int":
                assert isinstance(value, (int, np.integer)), name
            elif kind == "bool":
                assert isinstance(value, (bool, np.bool_)), name
            else:
                assert isinstance(value, (float, np.floating)), name
        assert f.attrs["format"] == "actprobe" and f.attrs["format_version"] == 1
        assert f.attrs["recipe"] == "doc-test"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", f.attrs["created"])


def test_the_documented_reading_snippet_runs(run_file):
    code = DOC.read_text().split("```python", 1)[1].split("```", 1)[0].replace('"run.h5"', repr(str(run_file)))
    scope: dict = {}
    exec(code, scope)
    assert scope["T"] == 5 and scope["mean"].shape == (5, 11) and scope["loss"].shape == (5,)
    assert scope["sites"][0] == "0"


def test_rows_past_len_step_are_ignored(tmp_path):
    """A file where a crash left stats longer than step: readers use len(step)."""
    path = tmp_path / "run.h5"
    model = nn.Sequential(nn.Linear(2, 2))
    with actprobe.Probe(model, path) as probe:
        for _ in range(3):
            model(torch.randn(2, 2)).sum().backward()
            probe.step()
    with h5py.File(path, "r+") as f:
        f["stats/mean"].resize(5, axis=0)
        f["time"].resize(5, axis=0)
    run = actprobe.read(path)
    assert run.rows == 3 and run.stats["mean"].shape == (3, 1) and run.time.shape == (3,)


def test_swmr_reader_sees_rows_while_the_file_grows(tmp_path):
    path = tmp_path / "run.h5"
    model = nn.Sequential(nn.Linear(2, 2))
    with actprobe.Probe(model, path, flush_every=1) as probe:
        seen = []
        for _ in range(3):
            model(torch.randn(2, 2)).sum().backward()
            probe.step()
            probe.flush(wait=True)
            with h5py.File(path, "r", libver="latest", swmr=True) as f:
                seen.append(f["step"].shape[0])
    assert seen == [1, 2, 3]
