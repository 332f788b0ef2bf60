"""``actprobe export --tensorboard``: the event files read back with TensorBoard's own reader hold the
run file's values, step for step."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import actprobe
from actprobe.cli import app
from conftest import assert_one_line_error, paper_cnn, train_steps

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="the test extra installs tensorboard")


def test_exported_events_hold_the_run_files_values(tmp_path):
    model = paper_cnn()
    with actprobe.Probe(model, tmp_path / "run.h5", grads=True, hist_every=2) as probe:
        train_steps(model, 5, probe=probe, batch=8)
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run.h5"), "--tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("wrote ") and "of 5 rows" in result.output
    events = event_accumulator.EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    run = actprobe.read(tmp_path / "run.h5")
    tags = events.Tags()
    for column, site in enumerate(run.sites):
        for name in ("mean", "std", "near_zero", "dead"):
            got = events.Scalars(f"{name}/{site}")
            assert [e.step for e in got] == run.step.tolist()
            np.testing.assert_array_equal(np.float32([e.value for e in got]), run.stats[name][:, column])
        grad = events.Scalars(f"grad_std/{site}")
        np.testing.assert_array_equal(np.float32([e.value for e in grad]), run.grad_stats["std"][:, column])
    loss = events.Scalars("scalars/loss")
    np.testing.assert_allclose([e.value for e in loss], run.scalars["loss"], rtol=1e-6)
    assert f"hist/{run.sites[0]}" in tags["histograms"]
    first = events.Histograms(f"hist/{run.sites[0]}")
    assert [h.step for h in first] == run.hist.step.tolist()
    np.testing.assert_array_equal(first[-1].histogram_value.bucket, run.hist.counts("counts", -1)[0])
    assert first[0].histogram_value.num == run.stats["count"][0, 0]


def test_bad_export_options_give_one_line(tmp_path):
    from conftest import one_recorded_step

    one_recorded_step(tmp_path / "run.h5")
    runner = CliRunner()
    assert_one_line_error(runner.invoke(app, ["export", str(tmp_path / "run.h5"), "--tensorboard", str(tmp_path / "tb"),
                                              "--stats", "median"]), "unknown statistic median")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(runner.invoke(app, ["export", str(tmp_path / "run.h5"), "--tensorboard",
                                              str(tmp_path / "file")]), "is a file")
    assert_one_line_error(runner.invoke(app, ["export", str(tmp_path / "missing.h5"), "--tensorboard",
                                              str(tmp_path / "tb")]), "no such file")


def test_a_second_export_replaces_the_first_and_inf_is_kept(tmp_path):
    from conftest import one_recorded_step

    model = one_recorded_step(tmp_path / "run.h5")
    del model
    import h5py

    with h5py.File(tmp_path / "run.h5", "a") as f:  # a loss that blew up
        f.require_group("scalars").create_dataset("boom", data=np.array([np.inf]))
    for _ in range(2):
        result = CliRunner().invoke(app, ["export", str(tmp_path / "run.h5"), "--tensorboard", str(tmp_path / "tb"),
                                          "--stats", "std,std"])
        assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1
    events = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.value for e in events.Scalars("scalars/boom")] == [np.inf]
    assert len(events.Scalars(f"std/{actprobe.read(tmp_path / 'run.h5').sites[0]}")) == 1
    assert_one_line_error(CliRunner().invoke(app, ["export", str(tmp_path / "run.h5"), "--tensorboard",
                                                   str(tmp_path / "tb"), "--stats", ","]), "names no statistic")
