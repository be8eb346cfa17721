"""Resuming: what a resumed run may change (the resume table), and a run stopped mid-epoch and
resumed ends bit-identical to an uninterrupted run.

The fast tests stop a run in-process right after a checkpoint; the slow ones use real
processes and a real kill: ``python -m alexnet_tutorial train`` is started, its checkpoint
polled until it shows a position inside the first epoch, and the process killed outright.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from alexnet_tutorial import cli
from alexnet_tutorial.checkpoint import best_path, load_checkpoint
from alexnet_tutorial.config import RESUMABLE, ResumeMismatch, TrainConfig, resume_config
from alexnet_tutorial.errors import ConfigError
from alexnet_tutorial.run import train

quiet = dict(progress=False, log=lambda _msg: None)

# --- the resume table ---------------------------------------------------------------------------

# What a resumed run may change; every other setting is the run's recipe and stays its own.
EXPECTED_RESUMABLE = {"epochs", "device", "precision", "channels_last", "compile", "data_dir", "checkpoint_every",
                      "eval_batch_size"}
# A valid value other than the saved run's (below) for every setting.
OTHER_VALUE = {"epochs": 10, "batch_size": 64, "lr": 0.02, "momentum": 0.8, "weight_decay": 1e-3,
               "schedule": "constant", "warmup": 0.1, "label_smoothing": 0.05, "shift": 1, "dropout": 0.2,
               "average": 0.5, "width_mult": 0.5, "seed": 7, "device": "cpu", "precision": "fp32",
               "channels_last": False, "compile": True, "loader": "torchvision", "data_dir": "/elsewhere",
               "subset": 1000, "stratified": True, "eval_batch_size": 500, "checkpoint_every": 10, "world_size": 2}
SAVED = TrainConfig(subset=2000, epochs=3).resolved().to_dict()  # a run's settings as its checkpoint holds them


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_the_resume_table_names_exactly_the_settings_a_resumed_run_may_change():
    assert set(RESUMABLE) == EXPECTED_RESUMABLE
    assert all(isinstance(why, str) and why for why in RESUMABLE.values())  # each says why
    assert set(OTHER_VALUE) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert all(OTHER_VALUE[name] != value for name, value in SAVED.items())


@pytest.mark.parametrize("name", sorted(set(OTHER_VALUE) - {"world_size"}))  # the world size: distributed.py
def test_a_resumed_run_takes_a_resumable_setting_and_refuses_any_other(name):
    value = OTHER_VALUE[name]
    for given in ({name: value}, TrainConfig(**{**SAVED, name: value})):  # as the command line and a notebook give it
        if name in EXPECTED_RESUMABLE:
            assert resume_config(SAVED, given, "run.pt") == TrainConfig(**{**SAVED, name: value})
        else:
            with pytest.raises(ResumeMismatch, match=rf"^{name}={value!r} differs from the run's {name}=") as info:
                resume_config(SAVED, given, "run.pt")
            assert (info.value.name, info.value.given, info.value.saved) == (name, value, SAVED[name])


def test_a_resumed_run_keeps_its_settings_when_none_or_the_same_are_given():
    saved = TrainConfig.from_dict(SAVED)
    assert resume_config(SAVED, None) == resume_config(SAVED, {}) == saved
    assert resume_config(SAVED, TrainConfig(subset=2000, epochs=3)) == saved  # the first command again
    assert resume_config(SAVED, {"data_dir": None}).data_dir == saved.data_dir  # not given: where it was


def test_a_resumed_run_can_be_extended_but_not_shortened():
    assert resume_config(SAVED, {"epochs": 3}).epochs == 3
    assert resume_config(SAVED, {"epochs": 4}).epochs == 4
    with pytest.raises(ConfigError, match="run.pt is a run of 3 epochs.*epochs must be at least 3, got 2"):
        resume_config(SAVED, {"epochs": 2}, "run.pt")


def test_the_command_lines_help_names_exactly_the_resumable_flags(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "2000")  # one line per option: no flag broken at its hyphen
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    named = re.search(r"continue the run saved in FILE; (.*?) may change", text).group(1).split(", ")
    assert set(named) == {flag(name) for name in EXPECTED_RESUMABLE}


def test_every_flag_the_resume_help_names_is_a_flag_of_train(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "2000")
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    options = set(re.findall(r"^\s+(--[a-z-]+)", text, re.M))
    named = re.search(r"continue the run saved in FILE; (.*?) may change", text).group(1).split(", ")
    assert set(named) <= options, f"named as resumable but not flags of train: {sorted(set(named) - options)}"


def test_the_command_line_refuses_seed_on_resume_and_takes_epochs_and_device(tiny, tmp_path, capsys):
    out = tmp_path / "run.pt"
    train(tiny(epochs=1), out=out, **quiet)
    before = out.read_bytes()
    assert cli.main(["train", "--resume", str(out), "--seed", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"alexnet-tutorial train: --seed 3 differs from 0, the setting of the run in {out}")
    assert "\n" not in err and out.read_bytes() == before
    allowed = re.search(r"\(change only (.*)\)$", err).group(1).split(", ")
    assert set(allowed) == {flag(name) for name in EXPECTED_RESUMABLE}
    assert cli.main(["train", "--resume", str(out), "--epochs", "2", "--device", "cpu", "--no-progress"]) == 0
    assert load_checkpoint(out)["epoch"] == 2


# --- stopped mid-epoch and resumed, in-process ------------------------------------------------------

# In the first epoch; in the second; in the second with a moving average of the weights.
@pytest.mark.parametrize("epoch, step, average", [(0, 3, 0.0), (1, 1, 0.0), (1, 1, 0.9)])
def test_a_run_stopped_mid_epoch_and_resumed_ends_bit_identical(tiny, tmp_path, stop_after, weights_equal,
                                                                without_timing, epoch, step, average):
    # Dropout and shifts draw random numbers, and the data order follows the epoch: the run
    # comes back exactly only with its random state and its place in the data restored.
    cfg = tiny(subset=256, epochs=2, dropout=0.3, shift=2, checkpoint_every=3, average=average)  # 8 steps an epoch
    whole = train(cfg, out=tmp_path / "whole.pt", **quiet)
    stop_after(epoch, step)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "cut.pt", **quiet)
    cut = load_checkpoint(tmp_path / "cut.pt")
    assert (cut["epoch"], cut["step"]) == (epoch, step)
    resumed = train(None, resume=tmp_path / "cut.pt", **quiet)
    assert weights_equal(whole.model.state_dict(), resumed.model.state_dict())
    assert without_timing(resumed.history) == without_timing(whole.history)
    a, b = load_checkpoint(tmp_path / "whole.pt"), load_checkpoint(tmp_path / "cut.pt")
    assert weights_equal(a["optimizer"]["state"][0], b["optimizer"]["state"][0])  # momentum too
    assert weights_equal(a["model"], b["model"])  # the weights trained, and their average
    assert (a["average"] is None) == (average == 0.0) and (b["average"] is None) == (average == 0.0)
    if average:
        assert a["average"]["updates"] == b["average"]["updates"] == 16
        assert weights_equal(a["average"]["model"], b["average"]["model"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


# --- killed with SIGKILL and resumed, in real processes -------------------------------------------

EPOCHS = 2
# 2,048 images in batches of 32: 64 steps per epoch, a checkpoint every 4 steps. The quarter
# width keeps each run to seconds; the CPU keeps it bit-exact.
SETTINGS = ["--subset", "2048", "--epochs", str(EPOCHS), "--batch-size", "32", "--checkpoint-every", "4",
            "--width-mult", "0.25", "--device", "cpu", "--no-progress"]
TIMEOUT_S = 300


def train_command(*args) -> list[str]:
    return [sys.executable, "-m", "alexnet_tutorial", "train", *map(str, args)]


def run_to_the_end(args, cwd):
    proc = subprocess.run(train_command(*args), cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"train {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}"
    return proc


def read(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def kill_mid_epoch(args, out, cwd) -> dict:
    """Start a run, wait until its checkpoint is inside epoch 1, SIGKILL it; return that checkpoint."""
    log = open(cwd / "killed-run.log", "w+b")  # a file, not a pipe: a full pipe would stall the run
    proc = subprocess.Popen(train_command(*args), cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                stderr = log.read().decode(errors="replace")[-2000:]
                pytest.fail(f"the run ended (status {proc.returncode}) before a mid-epoch checkpoint was seen, "
                            f"so it could not be killed mid-epoch; use more steps per epoch.\n{stderr}")
            if time.monotonic() > deadline:
                pytest.fail(f"no mid-epoch checkpoint in {out} after {TIMEOUT_S} s")
            if out.exists():
                state = read(out)  # writes are atomic: the file is always whole
                if state["epoch"] == 0 and state["step"] > 0:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=60)
                    return state
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """An uninterrupted run, and the same run killed mid-epoch then resumed."""
    folder = tmp_path_factory.mktemp("resume")
    full, interrupted = folder / "full.pt", folder / "run.pt"
    run_to_the_end([*SETTINGS, "--data-dir", data_dir, "--out", full], folder)
    seen = kill_mid_epoch([*SETTINGS, "--data-dir", data_dir, "--out", interrupted], interrupted, folder)
    at_kill = read(interrupted)
    run_to_the_end(["--resume", interrupted, "--no-progress"], folder)
    return {"full": full, "resumed": interrupted, "seen": seen, "at_kill": at_kill}


@pytest.mark.slow
def test_the_run_was_killed_inside_an_epoch(runs):
    assert runs["seen"]["epoch"] == 0 and 0 < runs["seen"]["step"] < 64
    assert runs["at_kill"]["epoch"] < EPOCHS, "the killed run had already finished"
    assert runs["at_kill"]["step"] % 4 == 0


@pytest.mark.slow
def test_resumed_run_ends_bit_identical(runs, without_timing):
    full, resumed = read(runs["full"]), read(runs["resumed"])
    assert (resumed["epoch"], resumed["step"]) == (full["epoch"], full["step"]) == (EPOCHS, 0)
    assert full["model"].keys() == resumed["model"].keys()
    for name, tensor in full["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), f"{name} differs after resuming"
    for index, state in full["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], resumed["optimizer"]["state"][index]["momentum_buffer"])
    assert without_timing(resumed["history"]) == without_timing(full["history"])
    assert resumed["best"] == full["best"]
    assert torch.equal(resumed["rng"]["torch"], full["rng"]["torch"])


@pytest.mark.slow
def test_best_file_holds_the_best_epoch(runs):
    for key in ("full", "resumed"):
        state, best = read(runs[key]), read(best_path(runs[key]))
        accuracies = [h["test_accuracy"] for h in state["history"]]
        best_epoch = accuracies.index(max(accuracies)) + 1
        assert best["epoch"] == best_epoch == state["best"]["epoch"]
        assert best["history"][-1]["test_accuracy"] == max(accuracies)
        if best_epoch == EPOCHS:
            assert all(torch.equal(t, state["model"][k]) for k, t in best["model"].items())
    full_best, resumed_best = read(best_path(runs["full"])), read(best_path(runs["resumed"]))
    for name, tensor in full_best["model"].items():
        assert torch.equal(tensor, resumed_best["model"][name])


@pytest.mark.slow
def test_resume_is_exact_with_the_torchvision_loader_and_random_shifts(tmp_path, data_dir, stop_after,
                                                                       weights_equal, without_timing):
    """The per-item loader draws its random shifts from the global generator: resuming
    mid-epoch must replay the order and the shifts exactly, as with the tensor loader."""
    cfg = dict(loader="torchvision", shift=2, subset=192, epochs=2, batch_size=32, checkpoint_every=2,
               width_mult=0.25, device="cpu", data_dir=str(data_dir))
    whole = train(TrainConfig(**cfg), out=tmp_path / "whole.pt", **quiet)
    stop_after(1, 2)  # mid-way through the second epoch
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**cfg), out=tmp_path / "cut.pt", **quiet)
    assert (load_checkpoint(tmp_path / "cut.pt")["epoch"], load_checkpoint(tmp_path / "cut.pt")["step"]) == (1, 2)
    resumed = train(None, resume=tmp_path / "cut.pt", **quiet)
    assert weights_equal(whole.model.state_dict(), resumed.model.state_dict())
    assert without_timing(whole.history) == without_timing(resumed.history)
