"""The Lightning callback on a real ``lightning.Trainer``: the file's rows, steps and metrics against the
trainer's own counters and the module's logged values; training bit-identical with and without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import actprobe

L = pytest.importorskip("lightning", reason="the test extra installs lightning")
from actprobe.integrations.lightning import ActprobeCallback  # noqa: E402


class Tiny(L.LightningModule):
    def __init__(self, fail_at: int = -1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        self.losses: list[float] = []  # each training step's loss, as the module saw it
        self.fail_at = fail_at

    def training_step(self, batch, index):
        if index == self.fail_at:
            raise RuntimeError("the user's training step failed")
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        self.losses.append(float(loss))
        return loss

    def validation_step(self, batch, index):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader():
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(40, 4, generator=gen), torch.randint(0, 2, (40,), generator=gen))
    return torch.utils.data.DataLoader(data, batch_size=8)


def fit(callbacks, accumulate: int = 1, fail_at: int = -1):
    torch.manual_seed(0)
    module = Tiny(fail_at)
    trainer = L.Trainer(max_epochs=2, callbacks=callbacks, accumulate_grad_batches=accumulate, logger=False,
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                        val_check_interval=3, num_sanity_val_steps=0, deterministic=True)
    trainer.fit(module, loader(), loader())
    return trainer, module


@pytest.mark.parametrize("accumulate", [1, 2])
def test_rows_steps_and_metrics_are_the_trainers(tmp_path, accumulate):
    trainer, module = fit([ActprobeCallback(tmp_path / "run.h5", grads=True)], accumulate)
    run = actprobe.read(tmp_path / "run.h5")
    steps = trainer.global_step
    # Lightning steps after every k-th batch and after an epoch's last one (5 batches an epoch)
    stepping = [e * 5 + b for e in range(2) for b in range(5) if (b + 1) % accumulate == 0 or b == 4]
    assert run.rows == steps == len(stepping) and list(run.step) == list(range(steps))
    assert run.scalars["global_step"].tolist() == list(range(1, steps + 1))
    # the loss of each row: the training step that stepped the optimizer (the last of its batches), as
    # Lightning passes it on (divided by accumulate_grad_batches); the logged metric as logged
    wanted = np.array([module.losses[i] for i in stepping])
    np.testing.assert_allclose(run.scalars["loss"] * accumulate, wanted, rtol=1e-6)
    np.testing.assert_allclose(run.scalars["train_loss"], wanted, rtol=1e-6)
    # a validation metric: only on the rows right after a validation, with the value it logged
    val = run.scalars["val_loss"]
    assert 0 < np.isfinite(val).sum() < steps and np.isnan(val[0])
    # each row merged its forwards: the first Linear saw k batches of 8 (8 units each)
    assert run.stats["count"][0, 0] == 8 * 8 * accumulate
    assert run.grad_stats and np.isfinite(run.grad_stats["std"][:]).all()


def test_training_is_bit_identical_with_and_without_the_callback(tmp_path):
    _, plain = fit([])
    _, probed = fit([ActprobeCallback(tmp_path / "run.h5", grads=True, params=True, hist_every=2)])
    for a, b in zip(plain.parameters(), probed.parameters()):
        assert torch.equal(a, b)
    assert actprobe.read(tmp_path / "run.h5").param_stats


def test_a_failing_fit_keeps_the_rows_committed_and_raises(tmp_path):
    callback = ActprobeCallback(tmp_path / "run.h5")
    with pytest.raises(RuntimeError, match="the user's training step failed"):
        fit([callback], fail_at=4)
    assert callback.probe is None  # closed
    run = actprobe.read(tmp_path / "run.h5")
    assert run.rows == 4 and run.closed


class TwoOptimizers(L.LightningModule):
    """Manual optimisation with two optimizers (as a GAN steps its generator and discriminator)."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.a = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        self.b = nn.Sequential(nn.Linear(4, 2))

    def training_step(self, batch, index):
        x, y = batch
        for net, opt in zip((self.a, self.b), self.optimizers()):
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
        self.log("b_loss", loss)

    def configure_optimizers(self):
        return [torch.optim.SGD(self.a.parameters(), lr=0.1), torch.optim.SGD(self.b.parameters(), lr=0.1)]


def test_two_optimizers_give_one_row_per_batch(tmp_path):
    torch.manual_seed(0)
    trainer = L.Trainer(max_epochs=1, callbacks=[ActprobeCallback(tmp_path / "run.h5")], logger=False,
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(TwoOptimizers(), loader())
    run = actprobe.read(tmp_path / "run.h5")
    assert trainer.global_step == 10 and run.rows == 5  # two optimizer steps a batch, one row a batch
    assert run.scalars["global_step"].tolist() == [2, 4, 6, 8, 10]
    assert {"a.0", "b.0"} <= set(run.sites) and np.isfinite(run.scalars["b_loss"]).all()


def test_ctrl_c_during_fit_closes_the_file(tmp_path):
    class Interrupted(Tiny):
        def training_step(self, batch, index):
            if self.global_step == 3:
                raise KeyboardInterrupt
            return super().training_step(batch, index)

    callback = ActprobeCallback(tmp_path / "run.h5")
    torch.manual_seed(0)
    trainer = L.Trainer(max_epochs=2, callbacks=[callback], logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0)
    try:
        trainer.fit(Interrupted(), loader())
    except (KeyboardInterrupt, SystemExit):
        pass  # Lightning's graceful shutdown, then whatever it re-raises
    assert callback.probe is None
    run = actprobe.read(tmp_path / "run.h5")
    assert run.closed and run.rows == 3


@pytest.mark.slow  # two processes started by Lightning
def test_a_ddp_fit_writes_a_distributed_run(tmp_path):
    torch.manual_seed(0)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                        callbacks=[ActprobeCallback(tmp_path / "ddp.h5")], enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(Tiny(), loader())
    run = actprobe.read(tmp_path / "ddp.h5")
    assert run.distributed and run.attrs["ranks"] == 2
    ranks = [actprobe.read(tmp_path / "ddp.h5", rank=r) for r in range(2)]
    # each rank saw its half of the data (DistributedSampler): the global rows count both
    assert run.rows == ranks[0].rows == 3
    assert run.stats["count"][0, 0] == ranks[0].stats["count"][0, 0] + ranks[1].stats["count"][0, 0]


def test_parameter_gradients_are_the_steps_own(tmp_path):
    """Lightning computes the gradient inside optimizer.step(closure): it is read after the step, so a row
    holds its own step's gradient (the module's on_before_optimizer_step sees the same)."""

    class Spy(Tiny):
        def __init__(self) -> None:
            super().__init__()
            self.grad_stds: list[float] = []

        def on_before_optimizer_step(self, optimizer):
            self.grad_stds.append(float(self.net[0].weight.grad.std(correction=0)))

    torch.manual_seed(0)
    module = Spy()
    trainer = L.Trainer(max_epochs=1, callbacks=[ActprobeCallback(tmp_path / "run.h5", params=True)], logger=False,
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(module, loader())
    run = actprobe.read(tmp_path / "run.h5")
    column = run.params.index("net.0.weight")
    np.testing.assert_allclose(run.param_stats["param_grad_stats"]["std"][:, column], module.grad_stds, rtol=1e-5)


def test_a_second_fit_writes_a_second_file_and_every_k_keeps_logged_metrics(tmp_path):
    callback = ActprobeCallback(tmp_path / "run.h5", every=2)
    fit([callback])
    fit([callback])
    first, second = actprobe.read(tmp_path / "run.h5"), actprobe.read(tmp_path / "run-2.h5")
    assert first.rows == second.rows == 5 and list(first.step) == [0, 2, 4, 6, 8]
    # validations after steps 3, 6 and 9 land on the next recorded row, even when that is not their step
    assert np.isfinite(first.scalars["val_loss"]).sum() == 2


def test_a_probe_that_cannot_be_made_leaves_training_alone(tmp_path):
    (tmp_path / "taken.h5").write_text("a file that is not a run")
    with pytest.warns(actprobe.ActprobeWarning, match="does not record this training"):
        trainer, _ = fit([ActprobeCallback(tmp_path / "taken.h5")])
    assert trainer.global_step == 10
