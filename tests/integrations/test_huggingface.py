"""The Hugging Face callback on a real ``transformers.Trainer`` training a tiny BERT built from a config
(nothing downloaded): rows, steps and logged metrics against the trainer's state and log history;
training bit-identical with and without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import actprobe

transformers = pytest.importorskip("transformers", reason="the test extra installs transformers")
pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate (in the test extra)")
from actprobe.integrations.huggingface import ActprobeCallback  # noqa: E402


class Tokens(torch.utils.data.Dataset):
    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 100, (48, 12), generator=gen)
        self.labels = torch.randint(0, 2, (48,), generator=gen)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def train(tmp_path, callbacks, accumulate: int = 1):
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=37, max_position_embeddings=32, num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), per_device_train_batch_size=4, gradient_accumulation_steps=accumulate,
        max_steps=6, logging_steps=2, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
        learning_rate=1e-3, seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=callbacks)
    trainer.train()
    return trainer, model


@pytest.mark.parametrize("accumulate", [1, 2])
def test_rows_steps_and_logged_metrics_are_the_trainers(tmp_path, accumulate):
    trainer, _ = train(tmp_path, [ActprobeCallback(tmp_path / "run.h5", grads=True)], accumulate)
    run = actprobe.read(tmp_path / "run.h5")
    assert run.rows == trainer.state.global_step == 6 and list(run.step) == list(range(6))
    assert run.scalars["global_step"].tolist() == [1, 2, 3, 4, 5, 6]
    logged = {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}
    assert sorted(logged) == [2, 4, 6]
    loss = run.scalars["loss"]
    np.testing.assert_allclose(loss[[1, 3, 5]], [logged[2], logged[4], logged[6]], rtol=1e-6)
    assert np.isnan(loss[[0, 2, 4]]).all()
    assert "learning_rate" in run.scalars and "train_runtime" in run.scalars  # the last row: the run's summary
    # the embeddings, attention and feed-forward layers are sites; each row merged its k forwards
    assert any(site.endswith("attention.self.query") for site in run.sites)
    embeddings = run.sites.index("bert.embeddings.word_embeddings")
    assert run.stats["count"][0, embeddings] == 4 * 12 * 32 * accumulate
    assert np.isfinite(run.grad_stats["std"][:, embeddings]).all()


def test_training_is_bit_identical_with_and_without_the_callback(tmp_path):
    _, plain = train(tmp_path, [])
    _, probed = train(tmp_path, [ActprobeCallback(tmp_path / "run.h5", grads=True, params=True)])
    for (name, a), b in zip(plain.named_parameters(), probed.parameters()):
        assert torch.equal(a, b), name
    assert actprobe.read(tmp_path / "run.h5").param_stats


def test_every_k_keeps_the_logged_metrics_and_a_second_train_gets_its_own_file(tmp_path):
    callback = ActprobeCallback(tmp_path / "run.h5", every=4)
    trainer, _ = train(tmp_path, [callback])
    run = actprobe.read(tmp_path / "run.h5")
    assert list(run.step) == [0, 4]
    # losses logged at steps 2, 4, 6: 2 and 4 wait for the row of step 4 (the latest is kept), 6 for none
    logged = {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}
    np.testing.assert_allclose(run.scalars["loss"][1], logged[4], rtol=1e-6)
    trainer.train()
    assert actprobe.read(tmp_path / "run-2.h5").rows == 2
