"""The rules of a run that a reader relies on without seeing them: no waiting on the device
inside an epoch, fp16 with its gradient scaler, checkpoints every N steps of the whole run,
a best epoch that a resume never forgets, and flags that a resume never silently drops."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from alexnet_tutorial import checkpoint as ckpt
from alexnet_tutorial import run as run_mod
from alexnet_tutorial.cli import main
from alexnet_tutorial.config import ResumeMismatch, TrainConfig, resume_config
from alexnet_tutorial.data import TensorLoader
from alexnet_tutorial.model import AlexNet
from alexnet_tutorial.run import LOG_EVERY, fit, train
from alexnet_tutorial.training import RunningLoss, make_optimizer, train_steps

CPU = torch.device("cpu")
quiet = dict(progress=False, log=lambda _msg: None)


@pytest.fixture
def scripted_accuracy(monkeypatch):
    """Make the test accuracy after epoch 1, 2, ... follow a script, to choose the best epoch."""

    def script(*accuracies):
        calls = iter(accuracies)

        def evaluate(*_args, **_kwargs):
            count = 10_000
            correct = round(next(calls) * count)
            return {"loss": 1.0, "accuracy": correct / count, "correct": correct, "count": count}

        monkeypatch.setattr(run_mod, "evaluate", evaluate)

    return script


# --- no host sync inside an epoch ---------------------------------------------------------------

def count_reads(monkeypatch):
    """Count every read of a tensor's value on the host (each one waits for a GPU)."""
    reads = {"n": 0}
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, **kwargs):
            reads["n"] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


@pytest.mark.parametrize("progress", [False, True])
def test_an_epoch_reads_the_device_every_log_every_steps_not_once_per_step(monkeypatch, train_sample, progress):
    # The loop runs LOG_EVERY steps between pauses; at a pause the run reads the running loss
    # (to check it is finite and to show it). An epoch of 3 x LOG_EVERY steps has two more
    # pauses than one of LOG_EVERY: a few more reads, not 2 x LOG_EVERY more.
    images, labels = train_sample
    test = TensorLoader(images[:64], labels[:64], 64)
    counts = {}
    for steps in (LOG_EVERY, 3 * LOG_EVERY):
        cfg = TrainConfig(epochs=1, batch_size=8, width_mult=0.25, device="cpu", precision="fp32",
                          shift=1).resolved(8 * steps)
        loader = TensorLoader(images[:8 * steps], labels[:8 * steps], 8, shuffle=True, shift=1)
        torch.manual_seed(0)
        model = AlexNet(width_mult=0.25, dropout=cfg.dropout)
        with monkeypatch.context() as m:
            reads = count_reads(m)
            fit(model, loader, test, cfg, progress=progress, log=lambda _msg: None)
        counts[steps] = reads["n"]
    assert 0 < counts[3 * LOG_EVERY] - counts[LOG_EVERY] <= 2 * 2, counts  # at most 2 reads per pause


# --- fp16 and its gradient scaler, on the CPU -------------------------------------------------

def test_fp16_training_runs_with_an_active_scaler_that_is_saved(tiny, tmp_path):
    result = train(tiny(precision="fp16", epochs=1), out=tmp_path / "run.pt", **quiet)
    assert result.precision == "fp16"
    assert torch.isfinite(torch.tensor(result.history[0]["train_loss"]))
    saved = ckpt.load_checkpoint(tmp_path / "run.pt")
    assert saved["precision"] == "fp16" and saved["device"] == "cpu"
    assert saved["scaler"] is not None and saved["scaler"]["scale"] > 0


def test_the_scaler_skips_a_step_whose_gradients_overflow(seeded_model, train_sample, weights_equal):
    model = seeded_model(width_mult=0.25, dropout=0.0)
    cfg = TrainConfig(device="cpu", precision="fp16", lr=0.01).resolved()
    optimizer = make_optimizer(model, cfg, CPU)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    images, labels = train_sample[0][:16], train_sample[1][:16]

    def step(x):
        return train_steps(model, [(x, labels)], optimizer, nn.CrossEntropyLoss(), lambda _step: cfg.lr, 0,
                           RunningLoss(CPU), device=CPU, precision="fp16", scaler=scaler)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    step(images * 1e6)  # activations beyond float16's 65504: inf, so the gradients are inf or nan
    assert weights_equal(before, model.state_dict()), "the overflowing step changed the weights"
    assert scaler.get_scale() == 2.0**15
    step(images)
    assert not weights_equal(before, model.state_dict())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fp16_resume_restores_the_scaler_and_ends_bit_identical(tiny, tmp_path, stop_after, without_timing,
                                                                weights_equal):
    cfg = tiny(precision="fp16", checkpoint_every=2)
    whole = train(cfg, out=tmp_path / "whole.pt", **quiet)
    stop_after(1, 2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "cut.pt", **quiet)
    cut = ckpt.load_checkpoint(tmp_path / "cut.pt")
    assert (cut["epoch"], cut["step"]) == (1, 2) and cut["scaler"] is not None
    resumed = train(None, resume=tmp_path / "cut.pt", **quiet)
    assert weights_equal(whole.model.state_dict(), resumed.model.state_dict())
    assert without_timing(whole.history) == without_timing(resumed.history)
    a, b = ckpt.load_checkpoint(tmp_path / "whole.pt"), ckpt.load_checkpoint(tmp_path / "cut.pt")
    assert a["scaler"] == b["scaler"]


# --- checkpoints every N steps of the run ---------------------------------------------------------

@pytest.mark.parametrize("every, expected", [
    (6, [(1, 0), (1, 2), (2, 0), (3, 0)]),                          # N larger than an epoch still writes
    (3, [(0, 3), (1, 0), (1, 2), (2, 0), (2, 1), (3, 0)]),
])
def test_checkpoint_every_counts_steps_over_the_whole_run(tiny, tmp_path, monkeypatch, scripted_accuracy,
                                                          every, expected):
    scripted_accuracy(0.1, 0.2, 0.3)
    written = []
    real = ckpt.save_checkpoint
    monkeypatch.setattr(ckpt, "save_checkpoint",
                        lambda state, path: (written.append((state["epoch"], state["step"], str(path))),
                                             real(state, path))[1])
    train(tiny(epochs=3, checkpoint_every=every), out=tmp_path / "run.pt", **quiet)
    main_file = [(e, s) for e, s, path in written if not path.endswith(".best.pt")]
    assert main_file == expected


# --- the best epoch is never forgotten ---------------------------------------------------------------

def test_resuming_into_another_file_keeps_the_best_epoch_and_its_weights(tiny, tmp_path, scripted_accuracy,
                                                                         stop_after, weights_equal):
    scripted_accuracy(0.5, 0.9, 0.6, 0.7)
    stop_after(3, 0)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(epochs=4), out=tmp_path / "a.pt", **quiet)
    best_a = ckpt.load_checkpoint(tmp_path / "a.best.pt")
    assert best_a["epoch"] == 2
    result = train(None, resume=tmp_path / "a.pt", out=tmp_path / "b.pt", **quiet)
    assert (result.best_epoch, result.best_accuracy) == (2, 0.9)
    best_b = ckpt.load_checkpoint(tmp_path / "b.best.pt")
    assert best_b["epoch"] == 2 and best_b["run_id"] == best_a["run_id"]
    assert weights_equal(best_b["model"], best_a["model"])
    assert weights_equal(result.best_state, best_a["model"])
    assert ckpt.load_checkpoint(tmp_path / "b.pt")["best"] == {"epoch": 2, "accuracy": 0.9}


@pytest.mark.parametrize("last, best_after", [(0.7, 2), (0.95, 4)])
def test_a_main_checkpoint_copied_alone_keeps_its_best_epoch(tiny, tmp_path, scripted_accuracy, stop_after,
                                                             last, best_after):
    scripted_accuracy(0.5, 0.9, 0.6, last)
    stop_after(3, 0)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(epochs=4), out=tmp_path / "a.pt", **quiet)
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    shutil.copy(tmp_path / "a.pt", elsewhere / "a.pt")  # the .best file stays behind
    lines = []
    result = train(None, resume=elsewhere / "a.pt", progress=False, log=lines.append)
    assert any("weights of the best epoch so far (epoch 2, 90.00%)" in line for line in lines)
    assert result.best_epoch == best_after
    if best_after == 2:  # nothing beat it: no .best file of a worse epoch appears
        assert not (elsewhere / "a.best.pt").exists()
        with pytest.raises(ValueError, match="weights of the best epoch"):
            result.best_model()
    else:
        assert ckpt.load_checkpoint(elsewhere / "a.best.pt")["epoch"] == 4


def test_a_best_file_of_another_run_is_never_taken_for_this_one(tiny, tmp_path, scripted_accuracy, stop_after):
    scripted_accuracy(0.5, 0.9, 0.5, 0.9, 0.6, 0.7)
    train(tiny(epochs=2, seed=1), out=tmp_path / "other.pt", **quiet)  # its best is epoch 2 as well
    stop_after(3, 0)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(epochs=4), out=tmp_path / "a.pt", **quiet)
    shutil.copy(tmp_path / "other.best.pt", tmp_path / "a.best.pt")
    lines = []
    result = train(None, resume=tmp_path / "a.pt", progress=False, log=lines.append)
    assert result.best_state is None and result.best_epoch == 2
    assert any("from another run" in line for line in lines)


def test_a_kill_between_the_two_epoch_end_writes_loses_nothing(tiny, tmp_path, stop_after, scripted_accuracy,
                                                               weights_equal):
    cfg = tiny(epochs=2)
    # whole, cut, resumed runs: the best epoch is the last, so that a main file exists before it
    scripted_accuracy(0.5, 0.6, 0.5, 0.6, 0.6)
    whole = train(cfg, out=tmp_path / "whole.pt", **quiet)
    best_epoch = whole.best_epoch
    assert best_epoch == 2
    stop_after(best_epoch, 0, before=True)  # the .best file is written, the main one not
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "cut.pt", **quiet)
    resumed = train(None, resume=tmp_path / "cut.pt", **quiet)
    assert (resumed.best_epoch, resumed.best_accuracy) == (whole.best_epoch, whole.best_accuracy)
    assert weights_equal(resumed.best_state, whole.best_state)
    a, b = ckpt.load_checkpoint(tmp_path / "whole.best.pt"), ckpt.load_checkpoint(tmp_path / "cut.best.pt")
    assert a["epoch"] == b["epoch"] == best_epoch and weights_equal(a["model"], b["model"])


def test_resuming_a_finished_run_reports_its_real_best(tiny, tmp_path, scripted_accuracy, capsys):
    scripted_accuracy(0.9, 0.8)
    train(tiny(epochs=2), out=tmp_path / "done.pt", **quiet)
    assert main(["train", "--resume", str(tmp_path / "done.pt"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "best 90.00% after epoch 1" in out and "-100" not in out


def test_images_per_second_of_a_resumed_epoch_counts_only_the_images_after_the_restart(tiny, tmp_path,
                                                                                       stop_after):
    cfg = tiny(epochs=1, checkpoint_every=1)
    stop_after(0, 3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "run.pt", **quiet)
    record = train(None, resume=tmp_path / "run.pt", **quiet).history[-1]
    assert record["images_per_s"] * record["seconds"] == pytest.approx(32)  # 1 step of 32 was left


# --- flags given with --resume ------------------------------------------------------------------------

def test_resume_config_takes_what_may_change_and_names_what_may_not():
    saved = TrainConfig(epochs=3, lr=0.05, data_dir="/data").to_dict()
    cfg = resume_config(saved, TrainConfig(epochs=10, lr=0.05, device="cpu", data_dir=None), "run.pt")
    assert (cfg.epochs, cfg.device, cfg.data_dir) == (10, "cpu", "/data")
    with pytest.raises(ResumeMismatch, match=r"lr=0.01 differs from the run's lr=0.05 in run.pt"):
        resume_config(saved, TrainConfig(epochs=3, lr=0.01), "run.pt")
    assert resume_config(saved, None) == TrainConfig.from_dict(saved)


def test_cli_resume_accepts_the_same_command_and_names_a_flag_that_differs(tiny, tmp_path, capsys, data_dir):
    out = tmp_path / "b.pt"
    same = ["--subset", "128", "--batch-size", "32", "--width-mult", "0.25", "--device", "cpu",
            "--precision", "fp32", "--data-dir", str(data_dir), "--no-progress"]
    assert main(["train", "--epochs", "1", *same, "--out", str(out)]) == 0
    before = out.read_bytes()
    # the interrupted command again, with --resume added: accepted
    assert main(["train", "--epochs", "1", *same, "--out", str(out), "--resume", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--lr", "0.01"]) == 2
    err = capsys.readouterr().err.strip()
    run_lr = ckpt.load_checkpoint(out)["config"]["lr"]  # chosen for batch 32 by the automatic recipe
    assert run_lr == 0.0125
    assert err.startswith(f"alexnet-tutorial train: --lr 0.01 differs from {run_lr:g}") and "\n" not in err
    assert main(["train", "--resume", str(out), "--batch-size", "64"]) == 2
    assert "--batch-size 64 differs from 32" in capsys.readouterr().err
    assert out.read_bytes() == before  # refused before anything was written
    # extending --epochs is what people ask for: it runs on, and says what changes
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "started for 1 epochs and now runs to 2" in text
    assert len(ckpt.load_checkpoint(out)["history"]) == 2
    assert main(["train", "--resume", str(out), "--epochs", "1"]) == 2  # a resumed run never shortens
    assert "epochs must be at least 2, got 1" in capsys.readouterr().err


def test_cli_resume_into_another_out_leaves_the_original_alone(tiny, tmp_path):
    train(tiny(epochs=1), out=tmp_path / "a.pt", **quiet)
    before = (tmp_path / "a.pt").read_bytes()
    assert main(["train", "--resume", str(tmp_path / "a.pt"), "--epochs", "2", "--out", str(tmp_path / "c.pt"),
                 "--no-progress"]) == 0
    assert (tmp_path / "a.pt").read_bytes() == before
    assert len(ckpt.load_checkpoint(tmp_path / "c.pt")["history"]) == 2
    assert main(["train", "--resume", str(tmp_path / "a.pt"), "--out", str(tmp_path / "c.pt")]) == 2


def test_settings_that_cannot_work_fail_before_any_data_is_read(tmp_path, capsys):
    missing = tmp_path / "no-data-here"
    for argv, fragment in ([["--seed", str(2**40)], "seed must be a whole number from 0 to 4294967295"],
                           [["--seed", "-1"], "seed must be"]):
        assert main(["train", *argv, "--data-dir", str(missing), "--out", str(tmp_path / "x.pt")]) == 2
        err = capsys.readouterr().err
        assert fragment in err and "MNIST" not in err


def test_a_stratified_subset_larger_than_the_rarest_digit_allows_is_refused():
    with pytest.raises(ValueError, match="at most 54210 images"):
        TrainConfig(subset=54_211, stratified=True)
    assert TrainConfig(subset=54_210, stratified=True).subset == 54_210
    assert TrainConfig(subset=60_000).subset == 60_000  # first-N subsets are not limited


# --- compile and fixed batch shapes ---------------------------------------------------------------------

def test_compile_gets_batches_of_one_shape_and_reports_its_time(tiny, monkeypatch):
    calls, shapes = [], []

    class Recorded(nn.Module):  # what torch.compile returns: a module that runs the model
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            shapes.append(tuple(x.shape))
            return self.model(x)

    def fake_compile(model, mode=None, **_kwargs):
        calls.append(mode)
        return Recorded(model)

    monkeypatch.setattr(torch, "compile", fake_compile)
    lines = []
    result = train(tiny(subset=100, epochs=1, compile=True), progress=False, log=lines.append)
    assert calls == [None]  # the CPU gets the default mode; CUDA gets "reduce-overhead"
    assert shapes == [(32, 1, 28, 28)] * 3  # 100 images: the short last batch of 4 is dropped
    assert result.compile_seconds is not None and any("torch.compile" in line for line in lines)


def test_a_best_file_left_behind_is_written_again_before_the_run_goes_on(tiny, tmp_path, scripted_accuracy,
                                                                         stop_after, weights_equal):
    # The main file was copied alone right after its best epoch; the resumed run then dies in
    # the middle of the next epoch. The second resume must still find the best epoch's weights.
    scripted_accuracy(0.5, 0.9, 0.6, 0.7)
    stop_after(2, 0)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(epochs=4, checkpoint_every=2), out=tmp_path / "a.pt", **quiet)
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    shutil.copy(tmp_path / "a.pt", elsewhere / "a.pt")
    best_weights = ckpt.load_checkpoint(tmp_path / "a.pt")["model"]
    stop_after(2, 2)  # mid-way through epoch 3
    with pytest.raises(KeyboardInterrupt):
        train(None, resume=elsewhere / "a.pt", **quiet)
    assert ckpt.load_checkpoint(elsewhere / "a.best.pt")["epoch"] == 2
    result = train(None, resume=elsewhere / "a.pt", **quiet)
    assert result.best_epoch == 2 and weights_equal(result.best_state, best_weights)
