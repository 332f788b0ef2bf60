"""actprobe.nn.WIBReLU (both modes, calibration by Eq. 7) and the init schemes of actprobe.init."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from actprobe import OptionError, datasets
from actprobe.init import PAPER_SCHEMES, SCHEMES, expected_std, fan_in, init_weights
from actprobe.models import paper_cnn
from actprobe.nn import WIBReLU, calibrate


@pytest.fixture(scope="module")
def batches():
    """Eight real Fashion-MNIST batches of 64 (the full set from $ACTPROBE_DATA, or the sample)."""
    loader = datasets.loader("fashion-mnist", "train", batch_size=64, seed=0)
    return [batch for _, batch in zip(range(8), loader)]


def wib_cnn(mode: str) -> nn.Sequential:
    torch.manual_seed(0)
    model = paper_cnn(1, activation=f"wib-relu-{mode}")
    init_weights(model, "kaiming")
    return model


def wib_modules(model: nn.Module) -> list[WIBReLU]:
    return [m for m in model.modules() if isinstance(m, WIBReLU)]


def outputs_of(model: nn.Module, modules: list[nn.Module], inputs: torch.Tensor) -> list[torch.Tensor]:
    got: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, o: got.append(o.detach())) for m in modules]
    try:
        model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return got


# -- fixed mode -------------------------------------------------------------------------------------
def test_fixed_mu_is_eq7_the_average_of_batch_means_of_relu(batches):
    model = wib_cnn("fixed")
    mus = calibrate(model, batches)
    assert list(mus) == ["1", "3", "5", "7"]
    # Independent reference for the first layer: float64 NumPy over the conv's output.
    with torch.no_grad():
        z = [model[0](x).double().numpy() for x, _ in batches]
    want = np.mean([np.maximum(zi, 0).mean() for zi in z])
    assert mus["1"] == pytest.approx(want, rel=1e-6)
    assert float(model[1].mu) == pytest.approx(want, rel=1e-6)


def test_fixed_output_mean_is_zero_on_the_calibration_data(batches):
    model = wib_cnn("fixed")
    calibrate(model, batches)
    model.eval()
    modules = wib_modules(model)
    per_batch = [[o.double().mean().item() for o in outputs_of(model, modules, x)] for x, _ in batches]
    layer_means = np.mean(per_batch, axis=0)
    assert np.all(np.abs(layer_means) < 1e-5), layer_means
    # and before calibration (μ = 0) the same layers have a clearly positive mean: the ReLU shift
    raw = wib_cnn("fixed")
    raw_means = np.mean([[o.double().mean().item() for o in outputs_of(raw, wib_modules(raw), x)]
                         for x, _ in batches], axis=0)
    assert np.all(raw_means > 0.1), raw_means


def test_calibration_keeps_the_model_mode_and_changes_no_parameter(batches):
    model = wib_cnn("fixed")
    before = {k: v.clone() for k, v in model.named_parameters()}
    model.train()
    calibrate(model, batches)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())


def test_state_dict_round_trip_keeps_mu(batches):
    model = wib_cnn("fixed")
    mus = calibrate(model, batches)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = paper_cnn(1, activation="wib-relu-fixed")
    assert all(float(m.mu) == 0.0 for m in wib_modules(fresh))
    fresh.load_state_dict(torch.load(buffer))
    assert [float(m.mu) for m in wib_modules(fresh)] == [float(m.mu) for m in wib_modules(model)]
    assert [float(m.mu) for m in wib_modules(fresh)] == pytest.approx(list(mus.values()), rel=1e-6)
    x = batches[0][0]
    model.eval(), fresh.eval()
    assert torch.equal(model(x), fresh(x))
    assert "mu" in dict(model[1].named_buffers()) and "running_mean" in dict(model[1].named_buffers())


@pytest.mark.parametrize("mode", ["fixed", "batch"])
def test_gradients_flow_through_wib_relu(mode, batches):
    model = wib_cnn(mode)
    if mode == "fixed":
        calibrate(model, batches)
    x, y = batches[0]
    nn.functional.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("mode", ["fixed", "batch"])
def test_gradient_matches_finite_differences(mode):
    module = WIBReLU(mode, mu=0.3).double().train()
    z = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    z.data[z.data.abs() < 0.05] += 0.2  # keep away from ReLU's kink
    assert torch.autograd.gradcheck(module, (z,))


# -- batch mode -------------------------------------------------------------------------------------
def test_batch_mode_subtracts_the_batch_mean_in_training_and_the_running_mean_in_eval():
    module = WIBReLU("batch", momentum=0.25).train()
    z1, z2 = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4) + 0.5
    out = module(z1)
    m1 = np.maximum(z1.double().numpy(), 0).mean()
    assert abs(out.double().mean().item()) < 1e-6
    np.testing.assert_allclose(out.double().numpy(), np.maximum(z1.double().numpy(), 0) - m1, atol=1e-6)
    module(z2)
    m2 = np.maximum(z2.double().numpy(), 0).mean()
    running = (0.0 * 0.75 + 0.25 * m1) * 0.75 + 0.25 * m2
    assert float(module.running_mean) == pytest.approx(running, rel=1e-5)
    module.eval()
    z3 = torch.randn(2, 3, 4, 4)
    np.testing.assert_allclose(module(z3).double().numpy(), np.maximum(z3.double().numpy(), 0) - running,
                               atol=1e-6)
    assert float(module.running_mean) == pytest.approx(running, rel=1e-5)  # eval does not update it


def test_batch_mode_calibration_sets_the_running_mean(batches):
    model = wib_cnn("batch")
    mus = calibrate(model, batches)
    assert [float(m.running_mean) for m in wib_modules(model)] == pytest.approx(list(mus.values()))


def test_calibrate_refuses_what_it_cannot_use(batches):
    with pytest.raises(OptionError, match="no WIBReLU"):
        calibrate(paper_cnn(1), batches)
    with pytest.raises(OptionError, match="re-iterable"):
        calibrate(wib_cnn("fixed"), (b for b in batches))
    with pytest.raises(OptionError, match="no batches"):
        calibrate(wib_cnn("fixed"), [])
    with pytest.raises(OptionError, match="mode"):
        WIBReLU("sometimes")


# -- init schemes -----------------------------------------------------------------------------------
# The formulas, written here independently of actprobe.init.expected_std.
FORMULAS = {
    "torch-default": lambda n: 1 / math.sqrt(3 * n),  # kaiming_uniform_(a=√5): bound 1/√n, std bound/√3
    "sqrt3": lambda n: math.sqrt(2 / (1 + 3)) * math.sqrt(3 / n) / math.sqrt(3),  # kaiming_uniform_(a=√3)
    "kaiming": lambda n: math.sqrt(2 / n),
    "eq5": lambda n: 1 / math.sqrt(n),
    "eq6": lambda n: 2 / math.sqrt(n),
    "normal": lambda n: 1.0,
}


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("layer", [nn.Conv2d(64, 128, 3), nn.Linear(784, 256)], ids=["conv", "linear"])
def test_weight_std_matches_the_formula(scheme, layer):
    torch.manual_seed(1)
    assert init_weights(layer, scheme) == 1
    w = layer.weight.detach().double().numpy()
    n = fan_in(layer.weight)
    assert n == (576 if isinstance(layer, nn.Conv2d) else 784)
    # the sample std of ~10^5 draws is within ~0.3% of the true std; allow 2%
    assert w.std() == pytest.approx(FORMULAS[scheme](n), rel=0.02)
    assert abs(w.mean()) < 0.02 * FORMULAS[scheme](n) * 3
    assert expected_std(scheme, n) == pytest.approx(FORMULAS[scheme](n), rel=1e-12)


def test_uniform_schemes_are_uniform_and_normal_ones_normal():
    layer = nn.Linear(1000, 200)
    for scheme, uniform in (("torch-default", True), ("sqrt3", True), ("kaiming", False), ("eq5", False)):
        init_weights(layer, scheme)
        w = layer.weight.detach().double().numpy().ravel()
        kurtosis = np.mean((w - w.mean()) ** 4) / w.var() ** 2
        assert kurtosis == pytest.approx(1.8 if uniform else 3.0, abs=0.1), scheme


def test_torch_default_is_what_pytorch_does():
    torch.manual_seed(7)
    reference = nn.Conv2d(8, 16, 3)
    ours = nn.Conv2d(8, 16, 3)
    torch.manual_seed(7)
    init_weights(ours, "torch-default")
    assert torch.equal(ours.weight, reference.weight)


def test_init_touches_weights_only_unless_asked():
    model = paper_cnn(1)
    biases = [m.bias.clone() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert init_weights(model, "kaiming") == 5
    assert all(torch.equal(b, m.bias) for b, m in zip(biases, [m for m in model.modules()
                                                                 if isinstance(m, (nn.Conv2d, nn.Linear))]))
    init_weights(model, "eq5", zero_bias=True)
    assert all(float(m.bias.detach().abs().sum()) == 0 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    with pytest.raises(OptionError, match="unknown init scheme"):
        init_weights(model, "xavier")
    assert set(PAPER_SCHEMES) <= set(SCHEMES)
