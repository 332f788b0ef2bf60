"""`actprobe run` on model files: training, the init check, the output file, and every kind of bad input
(one line on stderr, exit code 2, no traceback, nothing recorded lost)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import actprobe
from actprobe.cli import app
from conftest import assert_one_line_error

ROOT = Path(__file__).resolve().parents[2]
RUNNER = CliRunner()
ENV = {"COLUMNS": "200", "ACTPROBE_OFFLINE": "1"}

TINY = """
import torch
from torch import nn

def model():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

def data():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(5)]
"""


def write(tmp_path: Path, source: str, name: str = "m.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def invoke(*args: str, cwd: Path | None = None):
    if cwd is not None:
        previous = os.getcwd()
        os.chdir(cwd)
    try:
        return RUNNER.invoke(app, [str(a) for a in args], env=ENV)
    finally:
        if cwd is not None:
            os.chdir(previous)


assert_bad_input = assert_one_line_error


# -- runs that work ---------------------------------------------------------------------------------
def test_train_records_every_step_and_prints_the_summary(tmp_path):
    path = write(tmp_path, TINY)
    out = tmp_path / "r.h5"
    result = invoke("run", path, "--out", out)
    assert result.exit_code == 0, result.output
    run = actprobe.read(out)
    assert run.rows == 5 and run.sites == ["0", "1", "2"]
    assert run.attrs["mode"] == "train" and run.attrs["model_file"] == str(path)
    assert run.attrs["data_source"] == "data() of m.py (list)" and run.attrs["device"] == "cpu"
    assert np.all(np.isfinite(run.scalars["loss"]))
    assert "training" in result.stdout and "5/5" in result.stdout
    assert result.stdout.count("data: data() of m.py (list)") == 1
    assert "5 training steps on cpu" in result.stdout and f"5 recorded steps are in {out}" in result.stdout
    assert "│ 1    │ ReLU   │" in result.stdout


def test_run_attributes_are_the_documented_ones(tmp_path):
    from conftest import format_doc_table as _table

    out = tmp_path / "r.h5"
    assert invoke("run", write(tmp_path, TINY), "--out", out, "--steps", "1", "--seed", "3").exit_code == 0
    documented = {name: kind for name, kind, _ in _table("Attributes written by `actprobe run`")}
    base = {name for name, _, _ in _table("Root attributes")}
    attrs = actprobe.read(out).attrs
    assert set(attrs) - base == set(documented)
    for name, kind in documented.items():
        assert isinstance(attrs[name], {"str": str, "int": int}[kind]), name
    assert attrs["command"] == "actprobe run" and attrs["seed"] == 3


def test_loss_recorded_is_the_training_loss(tmp_path):
    """Same seed, same data, same model: the recorded losses equal a plain loop's, step by step."""
    path = write(tmp_path, TINY)
    out = tmp_path / "r.h5"
    assert invoke("run", path, "--out", out, "--seed", "5").exit_code == 0
    torch.manual_seed(5)
    namespace: dict = {}
    exec(textwrap.dedent(TINY), namespace)
    model, batches = namespace["model"](), namespace["data"]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    want = []
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        want.append(loss.item())
    np.testing.assert_array_equal(actprobe.read(out).scalars["loss"], np.array(want))


def test_epochs_steps_every_and_select(tmp_path):
    path = write(tmp_path, TINY)
    assert invoke("run", path, "--out", tmp_path / "e.h5", "--epochs", "3").exit_code == 0
    assert actprobe.read(tmp_path / "e.h5").rows == 15
    assert invoke("run", path, "--out", tmp_path / "s.h5", "--steps", "12", "--every", "4").exit_code == 0
    run = actprobe.read(tmp_path / "s.h5")
    assert run.step.tolist() == [0, 4, 8]  # 12 steps over 5-batch epochs: data() re-iterated
    assert invoke("run", path, "--out", tmp_path / "x.h5", "--steps", "2", "--select", "1",
                  "--select", "2").exit_code == 0
    assert actprobe.read(tmp_path / "x.h5").sites == ["1", "2"]


def test_one_shot_generator_data_is_asked_again_each_epoch(tmp_path):
    path = write(tmp_path, """
        import torch
        from torch import nn
        def model():
            return nn.Sequential(nn.Linear(2, 2))
        def data():
            return ((torch.randn(4, 2), torch.randint(0, 2, (4,))) for _ in range(3))
    """)
    assert invoke("run", path, "--out", tmp_path / "g.h5", "--epochs", "2").exit_code == 0
    assert actprobe.read(tmp_path / "g.h5").rows == 6


def test_custom_loss_optimizer_and_tuple_inputs(tmp_path):
    path = write(tmp_path, """
        import torch
        from torch import nn
        class Two(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = nn.Linear(3, 1), nn.Linear(3, 1)
            def forward(self, x, z):
                return self.a(x) + self.b(z)
        def model():
            return Two()
        def data():
            return [((torch.randn(8, 3), torch.randn(8, 3)), torch.randn(8, 1)) for _ in range(4)]
        loss_fn = nn.MSELoss()
        def optimizer(params):
            return torch.optim.SGD(params, lr=0.01)
    """)
    result = invoke("run", path, "--out", tmp_path / "t.h5")
    assert result.exit_code == 0, result.output
    assert actprobe.read(tmp_path / "t.h5").sites == ["a", "b"]


def test_init_check_feeds_standardised_random_inputs(tmp_path):
    path = write(tmp_path, """
        from torch import nn
        input_shape = (6,)
        def model():
            return nn.Sequential(nn.Identity())
    """)
    out = tmp_path / "i.h5"
    result = invoke("run", path, "--out", out, "--steps", "3", "--batch-size", "50")
    assert result.exit_code == 0, result.output
    assert "init check: 3 forward passes on standardised random inputs (mean 0, std 1) of shape (50, 6)" \
        in result.stdout
    run = actprobe.read(out)
    assert run.rows == 3 and run.attrs["mode"] == "init-check"
    # the Identity site sees the inputs themselves: exactly standardised, batch by batch
    np.testing.assert_allclose(run.stat("mean", "0"), 0.0, atol=1e-6)
    np.testing.assert_allclose(run.stat("std", "0"), 1.0, rtol=1e-5)


def test_init_check_with_example_input_and_forced_by_flag(tmp_path):
    path = write(tmp_path, TINY + "\ndef example_input():\n    return torch.ones(2, 4)\n")
    out = tmp_path / "i.h5"
    result = invoke("run", path, "--out", out, "--init-check", "--steps", "2", "--seed", "7")
    assert result.exit_code == 0, result.output
    assert "example_input() of m.py" in result.stdout
    run = actprobe.read(out)
    # reference: the same model drawn with the same seed, applied to the same input, no training
    namespace: dict = {}
    exec(textwrap.dedent(TINY), namespace)
    torch.manual_seed(7)
    first_layer = namespace["model"]()[0]
    want = first_layer(torch.ones(2, 4)).detach().double().numpy()
    assert run.rows == 2
    np.testing.assert_allclose(run.stat("std", "0"), want.std(), rtol=1e-5)
    np.testing.assert_allclose(run.stat("mean", "0"), want.mean(), rtol=1e-5, atol=1e-7)


def test_default_output_name_never_replaces_a_file(tmp_path):
    path = write(tmp_path, TINY, "tiny.py")
    for expected in ("tiny.h5", "tiny-2.h5", "tiny-3.h5"):
        result = invoke("run", path, "--steps", "1", cwd=tmp_path)
        assert result.exit_code == 0, result.output
        assert (tmp_path / expected).exists()
    assert actprobe.read(tmp_path / "tiny.h5").rows == 1


def test_overwrite_replaces_an_existing_out_file(tmp_path):
    path = write(tmp_path, TINY)
    out = tmp_path / "r.h5"
    assert invoke("run", path, "--out", out, "--steps", "1").exit_code == 0
    assert invoke("run", path, "--out", out, "--steps", "3", "--overwrite").exit_code == 0
    assert actprobe.read(out).rows == 3


# -- bad input ----------------------------------------------------------------------------------------
def test_missing_model_file(tmp_path):
    assert_bad_input(invoke("run", tmp_path / "nope.py"), "nope.py: no such file")


def test_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "def model():\n    return (\n\nx = = 1\n")
    assert_bad_input(invoke("run", path), f"{path}:", "syntax error")


def test_exception_while_loading_names_file_and_line(tmp_path):
    path = write(tmp_path, "import torch\n\nraise ValueError('broken config')\n")
    assert_bad_input(invoke("run", path), f"{path}:3: error while loading: ValueError: broken config")


def test_no_model_function(tmp_path):
    path = write(tmp_path, "x = 1\n")
    assert_bad_input(invoke("run", path), "defines no model()", "must define model() returning a torch.nn.Module")


def test_model_raises(tmp_path):
    path = write(tmp_path, "def model():\n    raise RuntimeError('out of ideas')\n")
    assert_bad_input(invoke("run", path), f"{path}:2: model() raised RuntimeError: out of ideas")


def test_model_returns_something_else(tmp_path):
    path = write(tmp_path, "def model():\n    return 42\n")
    assert_bad_input(invoke("run", path), "model() must return a torch.nn.Module, got int")


def test_data_yields_the_wrong_type(tmp_path):
    path = write(tmp_path, TINY.replace("return [(", "return [[1, 2, 3] for _ in range(2)] or [("))
    assert_bad_input(invoke("run", path, "--out", tmp_path / "r.h5"), "data() must yield (inputs, targets) pairs",
                     "batch 0 is a list of 3")
    assert not (tmp_path / "r.h5").exists()


def test_data_yields_non_tensors(tmp_path):
    path = write(tmp_path, TINY.replace("return [(", "return [('a', 'b')] or [("))
    assert_bad_input(invoke("run", path), "with tensors", "inputs a str")


def test_data_yields_the_wrong_shape(tmp_path):
    path = write(tmp_path, TINY.replace("torch.randn(16, 4,", "torch.randn(16, 7,"))
    assert_bad_input(invoke("run", path, "--out", tmp_path / "r.h5"), "the model's forward failed at step 0",
                     "(16, 7) float32 tensor", "RuntimeError")
    assert not (tmp_path / "r.h5").exists() and not (tmp_path / "r.h5.lock").exists()


def test_targets_the_default_loss_cannot_take(tmp_path):
    path = write(tmp_path, TINY.replace("torch.randint(0, 3, (16,), generator=g)", "torch.randn(16, 5, generator=g)"))
    assert_bad_input(invoke("run", path), "the default loss (cross-entropy) failed at step 0",
                     "targets a (16, 5) float32 tensor", "define loss_fn(outputs, targets)")


def test_data_with_mismatched_batch_sizes(tmp_path):
    path = write(tmp_path, TINY.replace("(16,), generator=g)", "(15,), generator=g)"))
    assert_bad_input(invoke("run", path), "must have the same (non-zero) batch dimension")


def test_data_is_not_iterable(tmp_path):
    path = write(tmp_path, TINY.replace("    g = torch", "    return 3\n    g = torch"))
    assert_bad_input(invoke("run", path), "data() must return an iterable", "got int")


def test_no_data_and_no_input_shape(tmp_path):
    path = write(tmp_path, "from torch import nn\ndef model():\n    return nn.Linear(2, 2)\n")
    assert_bad_input(invoke("run", path), "defines neither data() nor input_shape or example_input()")


def test_bad_input_shape(tmp_path):
    path = write(tmp_path, "from torch import nn\ninput_shape = 'big'\ndef model():\n    return nn.Linear(2, 2)\n")
    assert_bad_input(invoke("run", path), "input_shape must be a tuple of positive ints")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tmp_path):
    assert_bad_input(invoke("run", write(tmp_path, TINY), "--device", "cuda"), "--device cuda: CUDA is not available")


def test_unknown_device(tmp_path):
    assert_bad_input(invoke("run", write(tmp_path, TINY), "--device", "tpu"), "unknown device 'tpu'")


@pytest.mark.parametrize("args, fragment", [
    (["--steps", "0"], "--steps must be a positive integer"),
    (["--steps", "2", "--epochs", "1"], "give --steps or --epochs, not both"),
    (["--every", "-1"], "--every must be a positive integer"),
    (["--steps", "many"], "Invalid value for '--steps'"),
    (["--bogus"], "No such option"),
    (["--select", "nothing.*"], "matches no module"),
])
def test_bad_options(tmp_path, args, fragment):
    assert_bad_input(invoke("run", write(tmp_path, TINY), "--out", tmp_path / "r.h5", *args), fragment)
    assert not (tmp_path / "r.h5").exists()


def test_existing_out_file_is_refused_and_kept(tmp_path):
    out = tmp_path / "r.h5"
    out.write_bytes(b"precious")
    assert_bad_input(invoke("run", write(tmp_path, TINY), "--out", out), "exists; pass --overwrite")
    assert out.read_bytes() == b"precious"


def test_epochs_without_data(tmp_path):
    path = write(tmp_path, "from torch import nn\ninput_shape = (2,)\ndef model():\n    return nn.Linear(2, 2)\n")
    assert_bad_input(invoke("run", path, "--epochs", "2"), "--epochs needs data()")


def _data_raising(tmp_path: Path, at: int, raise_statement: str) -> Path:
    """A model file whose data() yields ``at`` batches, then runs ``raise_statement`` (on line 9)."""
    return write(tmp_path, f"""
        import torch
        from torch import nn
        def model():
            return nn.Sequential(nn.Linear(2, 2))
        def data():
            for i in range(10):
                if i == {at}:
                    {raise_statement}
                yield torch.randn(4, 2), torch.randint(0, 2, (4,))
    """)


def test_failure_after_recording_started_keeps_what_was_recorded(tmp_path):
    path = _data_raising(tmp_path, 3, "raise OSError('disk went away')")
    out = tmp_path / "r.h5"
    result = invoke("run", path, "--out", out)
    assert_bad_input(result, f"{path}:9: data() failed at batch 3: OSError: disk went away")
    assert "stopped after 3 training steps; 3 recorded steps are in" in result.stdout
    assert actprobe.read(out).rows == 3


def test_ctrl_c_keeps_what_was_recorded(tmp_path):
    path = _data_raising(tmp_path, 4, "raise KeyboardInterrupt")
    out = tmp_path / "r.h5"
    result = invoke("run", path, "--out", out)
    assert result.exit_code == 130, result.output
    assert "interrupted after 4 training steps; 4 recorded steps are in" in result.stdout
    assert actprobe.read(out).rows == 4


# -- the example probes, as CI runs them ----------------------------------------------------------------
def _run_probe(tmp_path, name, *args, env=None):
    command = [sys.executable, "-m", "actprobe", "run", str(ROOT / "probes" / name), *args]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_probe_paper_cnn(tmp_path):
    result = _run_probe(tmp_path, "paper_cnn.py", "--steps", "4", "--out", "p.h5")
    assert result.returncode == 0, result.stderr
    run = actprobe.read(tmp_path / "p.h5")
    assert run.rows == 4 and len(run.sites) == 11 and run.site_module_types[0] == "Conv2d"
    assert "data: Fashion-MNIST" in result.stdout


def test_probe_deep_mlp_shows_the_std_collapse(tmp_path):
    result = _run_probe(tmp_path, "deep_mlp.py", "--out", "d.h5")
    assert result.returncode == 0, result.stderr
    run = actprobe.read(tmp_path / "d.h5")
    linear = [i for i, kind in enumerate(run.site_module_types) if kind == "Linear"]
    assert len(linear) == 20 and run.attrs["mode"] == "init-check"
    std = run.stats["std"][0, linear]
    assert std[5] < 0.2 * std[0]  # ×0.4 per layer until the biases dominate
    assert "std ×0.0" in result.stdout  # flagged


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ACTPROBE_DATA"), reason="ACTPROBE_DATA names no local data set")
def test_probe_resnet18_on_cifar10(tmp_path):
    result = _run_probe(tmp_path, "resnet18.py", "--steps", "2", "--out", "r.h5")
    assert result.returncode == 0, result.stderr
    run = actprobe.read(tmp_path / "r.h5")
    assert run.rows == 2 and "layer4.1.relu#1" in run.sites and run.sites[-1] == "fc"
    assert "data: CIFAR-10 (50,000 train + 10,000 test images)" in result.stdout


@pytest.mark.slow
def test_offline_default_with_no_data_root_and_an_empty_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACTPROBE_", "XDG_"))}
    env.update(HOME=str(home), COLUMNS="200")
    command = [sys.executable, "-m", "actprobe", "run", str(ROOT / "probes" / "paper_cnn.py"), "--steps", "3"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    assert actprobe.read(tmp_path / "paper_cnn.h5").rows == 3
    # offline (as here) the packaged sample is used, online the full set is downloaded: either way it says
    assert ("data: Fashion-MNIST SAMPLE packaged with actprobe" in result.stdout
            or "downloaded by torchvision" in result.stdout), result.stdout
    env["ACTPROBE_OFFLINE"] = "1"
    command[-1] = "2"
    result = subprocess.run(command + ["--out", "o.h5"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0 and "Fashion-MNIST SAMPLE" in result.stdout
    assert "full set not used: download: turned off" in result.stdout


def test_the_readme_model_file_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    source = readme.split("```python\n# mymodel.py\n", 1)[1].split("```", 1)[0]
    path = write(tmp_path, source, "mymodel.py")
    out = tmp_path / "m.h5"
    result = invoke("run", path, "--steps", "3", "--out", out)
    assert result.exit_code == 0, result.output
    assert actprobe.read(out).sites == ["0", "1", "2", "3"]
    result = invoke("run", path, "--init-check", "--steps", "2", "--out", tmp_path / "i.h5")
    assert result.exit_code == 0 and "of shape (64, 1, 28, 28)" in result.stdout


RESIDUAL = """
import torch
from torch import nn

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.act = nn.Linear(32, 32), nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(x)) + x

def model():
    return nn.Sequential(nn.Linear(16, 32), Block(), Block(), nn.Linear(32, 4))

input_shape = (16,)
"""


def test_init_check_traces_the_layer_graph_and_select_takes_class_names(tmp_path):
    path = write(tmp_path, RESIDUAL)
    assert invoke("run", path, "--out", tmp_path / "g.h5", "--steps", "2").exit_code == 0
    run = actprobe.read(tmp_path / "g.h5")
    assert run.sites == ["0", "1.fc", "1.act", "1", "2.fc", "2.act", "2", "3"]  # "1": x + act(fc(x))
    edges = {(run.sites[a] if a >= 0 else "in", run.sites[b]) for a, b in run.edges}
    assert {("0", "1"), ("1.act", "1"), ("1", "2"), ("2.act", "2"), ("2", "3")} <= edges  # skip and branch
    assert invoke("run", path, "--out", tmp_path / "r.h5", "--steps", "2", "--select", "ReLU").exit_code == 0
    assert actprobe.read(tmp_path / "r.h5").sites == ["1.act", "2.act"]
