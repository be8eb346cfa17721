"""Training and evaluation: the right model evaluated the right way, honest losses, repeatable
runs, the schedule, the best epoch, and the rules a run keeps (resolved settings, the model's dropout)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from alexnet_tutorial import checkpoint as ckpt
from alexnet_tutorial import run as run_mod
from alexnet_tutorial.config import MAX_LR, MAX_WIDTH_MULT, TrainConfig
from alexnet_tutorial.data import TensorLoader
from alexnet_tutorial.errors import ConfigError, UserError
from alexnet_tutorial.model import AlexNet
from alexnet_tutorial.run import FitResult, RunState, fit, train
from alexnet_tutorial.training import RunningLoss, evaluate, learning_rate, make_optimizer, train_steps

CPU = torch.device("cpu")
quiet = dict(progress=False, log=lambda _msg: None)


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


def tiny_fit(train_sample, small_eval, seed=0, checkpoint_path=None, **overrides):
    settings = dict(epochs=1, batch_size=32, width_mult=0.25, device="cpu", precision="fp32", shift=1, seed=seed)
    cfg = TrainConfig(**{**settings, **overrides}).resolved(train_size=100)
    images, labels = train_sample
    loader = RecordingLoader(images[:100], labels[:100], cfg.batch_size, shuffle=True, seed=cfg.seed,
                             shift=cfg.shift)
    loader.seen = []
    torch.manual_seed(cfg.seed)
    model = AlexNet(width_mult=cfg.width_mult, dropout=cfg.dropout)
    return fit(model, loader, small_eval, cfg, checkpoint_path=checkpoint_path, **quiet), loader, model


def test_fit_returns_the_network_not_the_loss_function(train_sample, small_eval):
    # Bug 8: the original's "best model" was a deep copy of the loss function.
    result, _, model = tiny_fit(train_sample, small_eval, epochs=3)
    assert isinstance(result, FitResult)
    assert result.model is model and isinstance(result.model, AlexNet)
    best = result.best_model()
    assert isinstance(best, AlexNet) and best is not model
    accuracies = [h["test_accuracy"] for h in result.history]
    assert result.best_epoch == accuracies.index(max(accuracies)) + 1  # the first of equals
    assert result.best_accuracy == max(accuracies)
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

    monkeypatch.setattr(run_mod.nn, "CrossEntropyLoss", Recording)
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


def test_fit_is_repeatable_and_follows_the_seed(train_sample, small_eval, without_timing):
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
def test_train_on_real_data_is_repeatable(data_dir, without_timing):
    cfg = dict(subset=512, epochs=2, batch_size=64, width_mult=0.25, device="cpu", data_dir=str(data_dir))
    a = train(TrainConfig(**cfg), **quiet)
    b = train(TrainConfig(**cfg), **quiet)
    assert without_timing(a.history) == without_timing(b.history)
    for name, tensor in a.model.state_dict().items():
        assert torch.equal(tensor, b.model.state_dict()[name]), name
    assert a.history[-1]["train_loss"] < a.history[0]["train_loss"]


# --- the schedule: a function of the step --------------------------------------------------

def test_the_learning_rate_warms_up_linearly_then_decays_to_zero_at_the_end():
    cfg = TrainConfig(lr=0.1, warmup=0.25).resolved()
    # 20 steps, a quarter of them warming up: 0.02, 0.04 ... 0.1 over steps 0-4, then down by
    # 0.1/15 a step to 0 after the last step (step 20 is the one after the run).
    lrs = [learning_rate(step, cfg, total_steps=20) for step in range(21)]
    assert lrs[0] == pytest.approx(0.1 / 5)
    assert lrs[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1], rel=1e-12)
    assert lrs[4] == lrs[5] == max(lrs) == 0.1
    assert lrs[5:] == pytest.approx([0.1 * (15 - k) / 15 for k in range(16)], rel=1e-12, abs=1e-15)
    assert lrs[19] == pytest.approx(0.1 / 15) and lrs[20] == 0.0


def test_a_constant_schedule_keeps_the_peak_rate():
    cfg = TrainConfig(lr=0.03, schedule="constant").resolved()
    assert {learning_rate(step, cfg, total_steps=10) for step in range(11)} == {0.03}


def test_the_loop_trains_each_step_at_the_schedules_rate(seeded_model, train_sample):
    cfg = TrainConfig(lr=0.1, warmup=0.25, dropout=0.0).resolved()
    model = seeded_model(width_mult=0.25, dropout=0.0)
    optimizer = make_optimizer(model, cfg, CPU)
    used = []  # the rate of every optimizer step, as the step sees it
    optimizer.register_step_pre_hook(lambda opt, _args, _kwargs: used.append([g["lr"] for g in opt.param_groups]))

    def lr_at(step):
        return learning_rate(step, cfg, total_steps=20)

    images, labels = train_sample
    batches = [(images[8 * i:8 * (i + 1)], labels[8 * i:8 * (i + 1)]) for i in range(3)]
    running = RunningLoss(CPU)
    step = train_steps(model, batches, optimizer, nn.CrossEntropyLoss(), lr_at, 3, running, device=CPU)
    assert step == 6 and running.count == 24  # steps 3, 4, 5 of the run: warm-up, peak, decay
    assert used == [[lr_at(3)] * 2, [lr_at(4)] * 2, [lr_at(5)] * 2]
    assert [g["lr"] for g in optimizer.param_groups] == [learning_rate(step - 1, cfg, 20)] * 2


def test_weight_decay_spares_biases(seeded_model):
    optimizer = make_optimizer(seeded_model(width_mult=0.25), TrainConfig(weight_decay=1e-3).resolved())
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
    ("epochs", 10_001), ("lr", MAX_LR * 1.01), ("width_mult", MAX_WIDTH_MULT * 1.01), ("batch_size", 60_001),
])
def test_config_refuses_out_of_range_settings(field, value):
    with pytest.raises(ConfigError) as info:  # a UserError: the command line's one-line exit 2
        TrainConfig(**{field: value})
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)
    message = str(info.value)
    assert "\n" not in message
    named = {"lr": "learning rate"}.get(field, field)
    assert named in message or named.replace("_", " ") in message


def test_config_accepts_the_bounds_themselves():
    cfg = TrainConfig(epochs=10_000, lr=MAX_LR, width_mult=MAX_WIDTH_MULT, batch_size=60_000, seed=2**32 - 1)
    assert (cfg.epochs, cfg.lr, cfg.width_mult) == (10_000, MAX_LR, MAX_WIDTH_MULT)


def test_config_round_trips_through_a_dict_and_ignores_unknown_keys():
    cfg = TrainConfig(epochs=3, lr=0.02, subset=100, data_dir="/data")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict({**cfg.to_dict(), "from_a_newer_version": 1}) == cfg


# --- the best epoch ---------------------------------------------------------------------------

def test_of_equal_accuracies_the_earlier_epoch_stays_the_best():
    run = RunState()
    assert run.record_epoch({"epoch": 1, "test_accuracy": 0.5}) is True
    assert run.record_epoch({"epoch": 2, "test_accuracy": 0.5}) is False
    assert (run.best_epoch, run.best_accuracy, run.epoch) == (1, 0.5, 2)
    assert run.record_epoch({"epoch": 3, "test_accuracy": 0.4}) is False
    assert run.record_epoch({"epoch": 4, "test_accuracy": 0.6}) is True
    assert (run.best_epoch, run.best_accuracy, run.epoch, run.step) == (4, 0.6, 4, 0)
    # a checkpoint without its "best" field falls back on the history: the same rule
    assert ckpt.best_from_history(run.history[:3]) == {"epoch": 1, "accuracy": 0.5}
    assert ckpt.best_from_history(run.history) == {"epoch": 4, "accuracy": 0.6}


def test_a_tie_keeps_the_earlier_epochs_weights_in_the_result_and_the_best_file(train_sample, small_eval, monkeypatch,
                                                                                tmp_path, weights_equal):
    after_epoch = []  # the weights each epoch ended with

    def same_accuracy_every_epoch(model, _loader, _device, _precision="fp32"):
        after_epoch.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"loss": 1.0, "accuracy": 0.5, "correct": 250, "count": 500}

    monkeypatch.setattr(run_mod, "evaluate", same_accuracy_every_epoch)
    result, _, _ = tiny_fit(train_sample, small_eval, epochs=2, checkpoint_path=tmp_path / "run.pt")
    assert not weights_equal(after_epoch[0], after_epoch[1])
    assert (result.best_epoch, result.best_accuracy) == (1, 0.5)
    assert weights_equal(result.best_state, after_epoch[0])
    best_file = ckpt.load_checkpoint(ckpt.best_path(tmp_path / "run.pt"))
    assert best_file["epoch"] == 1 and weights_equal(best_file["model"], after_epoch[0])
    assert ckpt.load_checkpoint(tmp_path / "run.pt")["best"] == {"epoch": 1, "accuracy": 0.5}


# --- the rules a run keeps ----------------------------------------------------------------------

@pytest.mark.parametrize("model_dropout, config_dropout", [(0.5, 0.0), (0.0, 0.3)])
def test_fit_refuses_a_model_whose_dropout_is_not_the_configs(train_sample, small_eval, model_dropout,
                                                             config_dropout):
    # The checkpoint records the config's dropout: a network that trained with another would
    # be rebuilt wrong by load_model and resumed with the wrong recipe.
    cfg = TrainConfig(epochs=1, batch_size=32, width_mult=0.25, device="cpu", dropout=config_dropout).resolved(100)
    images, labels = train_sample
    loader = TensorLoader(images[:100], labels[:100], cfg.batch_size)
    model = AlexNet(width_mult=0.25, dropout=model_dropout)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=f"the model's dropout is {model_dropout:g} but the config's is "
                                          f"{config_dropout:g}"):
        fit(model, loader, small_eval, cfg, **quiet)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # refused before training
    result = fit(AlexNet(width_mult=0.25, dropout=config_dropout), loader, small_eval, cfg, **quiet)
    assert result.config.dropout == config_dropout and len(result.history) == 1


def test_code_after_the_recipe_refuses_an_unresolved_config(seeded_model, train_sample, small_eval):
    # The recipe is resolved once per run (train, or cfg.resolved() in a notebook); everything
    # after it takes a resolved config, so that no two places can choose differently.
    model = seeded_model(width_mult=0.25, dropout=0.0)
    images, labels = train_sample
    loader = TensorLoader(images[:64], labels[:64], 32)
    resolved = TrainConfig(epochs=1, device="cpu", dropout=0.0).resolved(64)
    optimizer = make_optimizer(model, resolved)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    unresolved = TrainConfig(epochs=1, device="cpu", dropout=0.0)  # batch, lr, smoothing, shift, average automatic
    for who, call in [("fit", lambda: fit(model, loader, small_eval, unresolved, **quiet)),
                      ("make_optimizer", lambda: make_optimizer(model, unresolved)),
                      ("a checkpoint", lambda: ckpt.training_state(
                          model, optimizer, None, unresolved, epoch=1, step=0, history=[], running={}, best={}))]:
        with pytest.raises(ConfigError, match=rf"^{who} needs a resolved config \(batch_size, lr, label_smoothing, "
                                              r"shift, average still automatic\)"):
            call()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match=r"\(lr still automatic\)"):
        make_optimizer(model, TrainConfig(batch_size=32, dropout=0.0, label_smoothing=0.0, shift=0, average=0.0))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_loss_that_is_no_longer_a_number_is_named_with_the_step_and_rate(bad, tmp_path):
    setup = run_mod.Setup(device=CPU, precision="fp32", channels_last=False, net=None, optimizer=None, scaler=None,
                          loss_fn=None, lr_at=lambda step: 10.0 if step == 5 else 0.0, steps_per_epoch=4)
    saved = tmp_path / "run.pt"
    run_mod.check_finite(RunState(epoch=1, step=2, loss_sum=1e6, count=64), setup, saved)  # finite: on it goes
    with pytest.raises(run_mod.Diverged) as info:
        run_mod.check_finite(RunState(epoch=1, step=2, loss_sum=bad, count=64), setup, saved)
    assert isinstance(info.value, UserError)  # the user's to fix: one line from the command line
    assert str(info.value) == ("training diverged: the loss is not finite by step 6 (epoch 2, learning rate 10); "
                               "no checkpoint was written; try a lower --lr")
    saved.write_bytes(b"a checkpoint")
    with pytest.raises(run_mod.Diverged, match=f"the last good checkpoint stays in {saved}; try a lower --lr"):
        run_mod.check_finite(RunState(epoch=1, step=2, loss_sum=bad, count=64), setup, saved)


def test_a_run_whose_loss_diverges_stops_before_it_writes_a_checkpoint(train_sample, small_eval, monkeypatch,
                                                                      tmp_path):
    class Exploding(nn.CrossEntropyLoss):
        def forward(self, logits, labels):
            return super().forward(logits, labels) * math.inf

    monkeypatch.setattr(run_mod.nn, "CrossEntropyLoss", Exploding)
    with pytest.raises(run_mod.Diverged, match=r"not finite by step 2 \(epoch 1, learning rate"):
        tiny_fit(train_sample, small_eval, checkpoint_every=2, checkpoint_path=tmp_path / "run.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_network_too_wide_for_the_devices_memory_is_refused_before_it_is_built(monkeypatch):
    monkeypatch.setattr(run_mod, "memory_of", lambda _device: 2**30)  # a device of 1 GiB
    with pytest.raises(ConfigError, match=r"^width_mult 16 gives 988,405,770 parameters, about 14.7 GiB to train; "
                                          r"this cpu has 1.0 GiB: choose a smaller --width-mult$"):
        run_mod.check_fits(TrainConfig(width_mult=16), CPU)
    run_mod.check_fits(TrainConfig(width_mult=1), CPU)  # 3.9 million parameters: 62 MB
    monkeypatch.setattr(run_mod, "memory_of", lambda _device: None)  # unknown: not refused
    run_mod.check_fits(TrainConfig(width_mult=16), CPU)
