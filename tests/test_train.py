"""Training and evaluation: the right model evaluated the right way, honest losses, repeatable runs."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from torch import nn

from alexnet_tutorial.data import TensorLoader
from alexnet_tutorial.model import AlexNet
from alexnet_tutorial.training import FitResult, TrainConfig, evaluate, fit, train

# The module, not the function of the same name that the package exports.
train_mod = importlib.import_module("alexnet_tutorial.training")
TIMING_FIELDS = {"seconds", "images_per_s"}
quiet = dict(progress=False, log=lambda _msg: None)


def without_timing(history):
    return [{k: v for k, v in h.items() if k not in TIMING_FIELDS} for h in history]


@pytest.fixture(scope="module")
def small_eval(test_split):
    """The first 500 test images in batches of 200 (the last one shorter)."""
    images, labels = test_split
    return TensorLoader(images[:500], labels[:500], batch_size=200)


# --- evaluate (bugs 6 and 7) --------------------------------------------------------------

def test_evaluate_matches_a_direct_computation(seeded_model, small_eval):
    model = seeded_model(width_mult=0.5).eval()
    result = evaluate(model, small_eval, "cpu")
    with torch.no_grad():
        logits = model(small_eval.images)
    assert result["count"] == 500
    assert result["accuracy"] == pytest.approx((logits.argmax(1) == small_eval.labels).float().mean().item())
    assert result["loss"] == pytest.approx(nn.functional.cross_entropy(logits, small_eval.labels).item(), rel=1e-5)


def test_evaluate_uses_the_model_it_is_given(seeded_model, small_eval):
    a, b = seeded_model(seed=1, width_mult=0.5), seeded_model(seed=2, width_mult=0.5)
    ra, rb = evaluate(a, small_eval, "cpu"), evaluate(b, small_eval, "cpu")
    assert ra["loss"] != rb["loss"]
    assert evaluate(a, small_eval, "cpu") == ra


def test_evaluate_runs_dropout_off_and_restores_the_mode(seeded_model, small_eval):
    model = seeded_model(width_mult=0.5, dropout=0.5).train()
    in_training_mode = evaluate(model, small_eval, "cpu")
    assert model.training
    model.eval()
    assert evaluate(model, small_eval, "cpu") == in_training_mode  # dropout was off both times
    assert not model.training


def test_evaluate_leaves_gradients_alone(seeded_model, small_eval):
    # Bug 6: the original evaluated with autograd on, building a graph for every batch.
    model = seeded_model(width_mult=0.5)
    tracked = []
    model.register_forward_hook(lambda _m, _i, out: tracked.append(out.requires_grad))
    evaluate(model, small_eval, "cpu")
    assert tracked == [False, False, False]
    assert all(p.grad is None for p in model.parameters())
    model.fc3.weight.grad = torch.ones_like(model.fc3.weight)
    evaluate(model, small_eval, "cpu")
    assert torch.equal(model.fc3.weight.grad, torch.ones_like(model.fc3.weight))
    assert model.fc1[1].weight.grad is None


def test_evaluate_refuses_an_empty_loader(seeded_model):
    empty = TensorLoader(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long), batch_size=4)
    with pytest.raises(ValueError, match="empty"):
        evaluate(seeded_model(width_mult=0.25), empty, "cpu")


# --- fit ----------------------------------------------------------------------------------

class RecordingLoader(TensorLoader):
    """A TensorLoader that remembers the labels of every batch it hands out."""

    def __iter__(self):
        for x, y in super().__iter__():
            self.seen.append(y.clone())
            yield x, y


def tiny_fit(train_sample, small_eval, seed=0, **overrides):
    settings = dict(epochs=1, batch_size=32, width_mult=0.25, device="cpu", precision="fp32", shift=1, seed=seed)
    cfg = TrainConfig(**{**settings, **overrides}).resolved(train_size=100)
    images, labels = train_sample
    loader = RecordingLoader(images[:100], labels[:100], cfg.batch_size, shuffle=True, seed=cfg.seed,
                             shift=cfg.shift)
    loader.seen = []
    torch.manual_seed(cfg.seed)
    model = AlexNet(width_mult=cfg.width_mult, dropout=cfg.dropout)
    return fit(model, loader, small_eval, cfg, **quiet), loader, model


def test_fit_returns_the_network_not_the_loss_function(train_sample, small_eval):
    # Bug 8: the original's "best model" was a deep copy of the loss function.
    result, _, model = tiny_fit(train_sample, small_eval, epochs=2)
    assert isinstance(result, FitResult)
    assert result.model is model and isinstance(result.model, AlexNet)
    best = result.best_model()
    assert isinstance(best, AlexNet) and best is not model
    assert result.best_epoch in (1, 2)
    assert result.best_accuracy == max(h["test_accuracy"] for h in result.history)
    for name, tensor in best.state_dict().items():
        assert torch.equal(tensor, result.best_state[name])
    assert evaluate(best, small_eval, "cpu")["accuracy"] == result.best_accuracy


def test_history_train_loss_is_the_epoch_mean(train_sample, small_eval, monkeypatch):
    # Bug 9: the original printed the last batch's loss. Here the batches are 32, 32, 32, 4:
    # the mean weighted by batch size differs from both the last loss and the plain mean.
    losses = []
    real_loss = nn.CrossEntropyLoss

    class Recording(real_loss):
        def forward(self, logits, labels):
            loss = super().forward(logits, labels)
            losses.append((loss.item(), len(labels)))
            return loss

    monkeypatch.setattr(train_mod.nn, "CrossEntropyLoss", Recording)
    result, loader, _ = tiny_fit(train_sample, small_eval, epochs=2)
    assert [n for _l, n in losses] == [32, 32, 32, 4] * 2
    assert [len(y) for y in loader.seen] == [32, 32, 32, 4] * 2
    for epoch, record in enumerate(result.history):
        batch = losses[4 * epoch:4 * epoch + 4]
        weighted = sum(loss * n for loss, n in batch) / sum(n for _l, n in batch)
        assert record["train_loss"] == pytest.approx(weighted, rel=1e-9)
        assert record["train_loss"] != pytest.approx(batch[-1][0], rel=1e-6)
    history = result.history
    assert [h["epoch"] for h in history] == [1, 2]
    assert set(history[0]) == {"epoch", "train_loss", "test_loss", "test_accuracy", "seconds", "images_per_s"}


def test_fit_is_repeatable_and_follows_the_seed(train_sample, small_eval):
    # Bug 12: no seeds, no repeatable runs. Same settings on the CPU: the same bits.
    a, _, _ = tiny_fit(train_sample, small_eval, seed=0, epochs=2)
    b, _, _ = tiny_fit(train_sample, small_eval, seed=0, epochs=2)
    c, _, _ = tiny_fit(train_sample, small_eval, seed=1, epochs=2)
    assert without_timing(a.history) == without_timing(b.history)
    for name, tensor in a.model.state_dict().items():
        assert torch.equal(tensor, b.model.state_dict()[name]), name
    assert without_timing(a.history) != without_timing(c.history)
    assert not torch.equal(a.model.fc3.weight, c.model.fc3.weight)


@pytest.mark.slow
def test_train_on_real_data_is_repeatable(data_dir):
    cfg = dict(subset=512, epochs=2, batch_size=64, width_mult=0.25, device="cpu", data_dir=str(data_dir))
    a = train(TrainConfig(**cfg), **quiet)
    b = train(TrainConfig(**cfg), **quiet)
    assert without_timing(a.history) == without_timing(b.history)
    for name, tensor in a.model.state_dict().items():
        assert torch.equal(tensor, b.model.state_dict()[name]), name
    assert a.history[-1]["train_loss"] < a.history[0]["train_loss"]


def test_learning_rate_schedule_warms_up_and_decays_to_zero(seeded_model):
    cfg = TrainConfig(epochs=2, lr=0.1, warmup=0.25)
    optimizer = train_mod.make_optimizer(seeded_model(width_mult=0.25), cfg)
    scheduler = train_mod.make_scheduler(optimizer, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.1 / 5) and lrs[4] == pytest.approx(0.1)
    assert lrs[:5] == sorted(lrs[:5]) and lrs[4:] == sorted(lrs[4:], reverse=True)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_weight_decay_spares_biases(seeded_model):
    optimizer = train_mod.make_optimizer(seeded_model(width_mult=0.25), TrainConfig(weight_decay=1e-3))
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 1e-3 and all(p.ndim > 1 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim == 1 for p in no_decay["params"])
    assert optimizer.defaults["nesterov"]


# --- settings -----------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("epochs", -3), ("epochs", 1.5), ("batch_size", 0), ("eval_batch_size", 0),
    ("lr", 0.0), ("lr", -0.1), ("lr", math.nan), ("lr", math.inf), ("momentum", 1.0),
    ("weight_decay", -1e-4), ("warmup", 1.0), ("label_smoothing", 1.0), ("shift", 9), ("shift", -1),
    ("dropout", 1.0), ("width_mult", 0.0), ("width_mult", math.nan), ("device", "tpu"),
    ("precision", "fp8"), ("loader", "ffcv"), ("schedule", "cosine"), ("subset", 0), ("subset", 60_001),
    ("checkpoint_every", -1), ("seed", -1), ("seed", 2**32), ("channels_last", "yes"), ("compile", 1.0),
])
def test_config_refuses_out_of_range_settings(field, value):
    with pytest.raises(ValueError) as info:
        TrainConfig(**{field: value})
    message = str(info.value)
    assert "\n" not in message
    named = {"lr": "learning rate"}.get(field, field)
    assert named in message or named.replace("_", " ") in message


def test_config_round_trips_through_a_dict_and_ignores_unknown_keys():
    cfg = TrainConfig(epochs=3, lr=0.02, subset=100, data_dir="/data")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict({**cfg.to_dict(), "from_a_newer_version": 1}) == cfg
