"""A run killed with SIGKILL mid-epoch and resumed ends bit-identical to an uninterrupted run.

Real processes, a real kill: ``python -m alexnet_tutorial train`` is started, its checkpoint
polled until it shows a position inside the first epoch, and the process killed outright.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from alexnet_tutorial.checkpoint import best_path

pytestmark = pytest.mark.slow

EPOCHS = 2
# 2,048 images in batches of 32: 64 steps per epoch, a checkpoint every 4 steps. The quarter
# width keeps each run to seconds; the CPU keeps it bit-exact.
SETTINGS = ["--subset", "2048", "--epochs", str(EPOCHS), "--batch-size", "32", "--checkpoint-every", "4",
            "--width-mult", "0.25", "--device", "cpu", "--no-progress"]
TIMEOUT_S = 300
TIMING_FIELDS = {"seconds", "images_per_s"}


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


def without_timing(history):
    return [{k: v for k, v in h.items() if k not in TIMING_FIELDS} for h in history]


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


def test_the_run_was_killed_inside_an_epoch(runs):
    assert runs["seen"]["epoch"] == 0 and 0 < runs["seen"]["step"] < 64
    assert runs["at_kill"]["epoch"] < EPOCHS, "the killed run had already finished"
    assert runs["at_kill"]["step"] % 4 == 0


def test_resumed_run_ends_bit_identical(runs):
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


def test_resume_is_exact_with_the_torchvision_loader_and_random_shifts(tmp_path, data_dir, monkeypatch):
    """The per-item loader draws its random shifts from the global generator: resuming
    mid-epoch must replay the order and the shifts exactly, as with the tensor loader."""
    from alexnet_tutorial import checkpoint as ckpt
    from alexnet_tutorial.training import TrainConfig, train

    cfg = dict(loader="torchvision", shift=2, subset=192, epochs=2, batch_size=32, checkpoint_every=2,
               width_mult=0.25, device="cpu", data_dir=str(data_dir))
    whole = train(TrainConfig(**cfg), out=tmp_path / "whole.pt", progress=False, log=lambda _: None)

    saves = []
    real_save = ckpt.save_checkpoint

    def save_then_die(state, path):
        real_save(state, path)
        saves.append((state["epoch"], state["step"]))
        if (state["epoch"], state["step"]) == (1, 2):  # mid-way through the second epoch
            raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**cfg), out=tmp_path / "cut.pt", progress=False, log=lambda _: None)
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)
    assert saves[-1] == (1, 2)

    resumed = train(None, resume=tmp_path / "cut.pt", progress=False, log=lambda _: None)
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    strip = lambda h: [{k: v for k, v in e.items() if k not in TIMING_FIELDS} for e in h]  # noqa: E731
    assert strip(whole.history) == strip(resumed.history)
