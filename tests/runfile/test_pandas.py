"""``Run.to_pandas()``: the long table of a run's statistics, value for value the same as ``run.stats``."""

from __future__ import annotations

import numpy as np
import pytest


import actprobe
from actprobe.errors import FormatError
from conftest import paper_cnn, train_steps

pd = pytest.importorskip("pandas", reason="the test extra installs pandas")


def test_to_pandas_holds_every_value_of_run_stats(tmp_path):
    model = paper_cnn()
    with actprobe.Probe(model, tmp_path / "run.h5", grads=True) as probe:
        train_steps(model, 4, probe=probe, batch=8)
    run = actprobe.read(tmp_path / "run.h5")
    frame = run.to_pandas()
    assert list(frame.columns) == ["step", "site", "module_type", "statistic", "value"]
    assert len(frame) == run.rows * len(run.sites) * len(actprobe.STATISTICS)
    for name in actprobe.STATISTICS:
        wide = frame[frame.statistic == name].pivot(index="step", columns="site", values="value")[run.sites]
        np.testing.assert_array_equal(wide.to_numpy(), run.stats[name][:].astype(np.float64))
    kinds = frame.drop_duplicates("site").set_index("site")["module_type"]
    assert [kinds[s] for s in run.sites] == run.site_module_types
    grads = run.to_pandas("std", grad=True)
    np.testing.assert_array_equal(grads.value.to_numpy().reshape(run.rows, -1), run.grad_stats["std"][:])
    with pytest.raises(FormatError, match="unknown statistic"):
        run.to_pandas("median")


def test_to_pandas_without_gradients_says_so(tmp_path):
    from conftest import one_recorded_step

    one_recorded_step(tmp_path / "run.h5")
    with pytest.raises(FormatError, match="no gradient statistics"):
        actprobe.read(tmp_path / "run.h5").to_pandas(grad=True)
    assert len(actprobe.read(tmp_path / "run.h5").to_pandas(["mean", "std"])) == 2  # one row of one site
