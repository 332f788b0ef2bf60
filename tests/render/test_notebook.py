"""What a notebook gets: ``actprobe.plot`` returns the figures ``actprobe plot`` writes, without writing
anything; ``actprobe.summary`` displays as HTML in Jupyter."""

from __future__ import annotations

import matplotlib.figure
import pytest

import actprobe
from actprobe.errors import OptionError
from conftest import paper_cnn, train_steps


def test_plot_returns_open_figures_and_writes_nothing(tmp_path, monkeypatch):
    model = paper_cnn()
    with actprobe.Probe(model, tmp_path / "run.h5", grads=True) as probe:
        train_steps(model, 3, probe=probe, batch=8)
    monkeypatch.chdir(tmp_path)
    figures = actprobe.plot(tmp_path / "run.h5")
    assert all(isinstance(f, matplotlib.figure.Figure) for f in figures)
    assert [f.get_label() for f in figures] == ["run-mean-std", "run-near-zero", "run-grad-std"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]
    (figure,) = [f for f in actprobe.plot(actprobe.read(tmp_path / "run.h5"), select="ReLU") if f.get_label() == "run-near-zero"]
    assert len(figure.axes[0].get_xticklabels()) == 4  # the four ReLUs
    with pytest.raises(OptionError, match="matches no site"):
        actprobe.plot(tmp_path / "run.h5", select="Tanh")


def test_the_summary_displays_as_html_in_jupyter(tmp_path):
    from conftest import one_recorded_step

    one_recorded_step(tmp_path / "run.h5")
    html = actprobe.summary(tmp_path / "run.h5")._repr_html_()
    assert html.startswith("<pre") and "activations, step 0" in html and "Linear" in html
