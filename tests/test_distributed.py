"""Data-parallel training through torchrun: real processes on the CPU (gloo, loopback only).

Every multi-process run here is ``python -m torch.distributed.run --standalone`` as a
subprocess, with one thread per process, a quarter-width network and a small subset, so
each takes seconds.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alexnet_tutorial import cli
from alexnet_tutorial.checkpoint import best_path
from alexnet_tutorial.config import TrainConfig
from alexnet_tutorial.data import TensorLoader
from alexnet_tutorial.model import AlexNet

pytestmark = pytest.mark.slow

TIMEOUT_S = 300
# 4,096 images in global batches of 32 (16 per process): 128 steps, a checkpoint every 8.
SETTINGS = ["--subset", "4096", "--epochs", "1", "--batch-size", "32", "--checkpoint-every", "8",
            "--width-mult", "0.25", "--device", "cpu", "--precision", "fp32", "--no-progress"]
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RUN_ID", "GROUP_RANK")


def environment() -> dict:
    """The environment of a launched job: one thread per process, gloo on the loopback device."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    return {**env, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}


def torchrun(*args, processes: int = 2, restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
            "--max-restarts", str(restarts), *map(str, args)]


def train_args(data_dir, out, *extra) -> list[str]:
    return ["-m", "alexnet_tutorial", "train", *SETTINGS, "--data-dir", data_dir, "--out", out, *extra]


def run(command, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, env=environment())


def read(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# The loader: every rank its own slice of the same global batches ----------------------------

def test_ranks_split_every_global_batch_between_them():
    images, labels = torch.randn(24, 1, 28, 28), torch.arange(24)
    settings = dict(batch_size=8, shuffle=True, seed=3, shift=2)
    whole = TensorLoader(images, labels, **settings)
    halves = [TensorLoader(images, labels, rank=r, world_size=2, **settings) for r in (0, 1)]
    for loader in (whole, *halves):
        loader.set_epoch(1)
    assert len(whole) == len(halves[0]) == len(halves[1]) == 3
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *halves):
        assert len(y0) == len(y1) == 4
        assert torch.equal(torch.cat([y0, y1]), y)  # the same images, in the same order, shifted alike
        assert torch.equal(torch.cat([x0, x1]), x)


def test_leftover_images_are_dropped_so_every_slice_is_equal():
    labels = torch.arange(13)
    loaders = [TensorLoader(torch.zeros(13, 1, 28, 28), labels, 4, shuffle=True, rank=r, world_size=2)
               for r in (0, 1)]
    batches = [[y for _, y in loader] for loader in loaders]
    assert [len(y) for y in batches[0]] == [len(y) for y in batches[1]] == [2, 2, 2]
    seen = torch.cat([torch.cat(b) for b in batches])
    assert len(seen) == 12 and len(seen.unique()) == 12


# Bad input: one line, before any training -----------------------------------------------------

def main_with(argv, monkeypatch, **env):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()
    return cli.main(argv, out=out, err=err), out.getvalue(), err.getvalue()


@pytest.mark.parametrize("env, args, message", [
    (dict(WORLD_SIZE="3"), ["--batch-size", "64"], "batch size 64 (images per step, all processes together) "
                                                   "does not split evenly over 3 processes; choose a multiple of 3"),
    (dict(WORLD_SIZE="4"), ["--batch-size", "4", "--subset", "3"], "4 processes but only 3 training image(s)"),
    (dict(WORLD_SIZE="2"), ["--loader", "torchvision"], "the torchvision loader runs in one process only"),
])
def test_settings_that_cannot_be_split_are_refused_in_one_line(env, args, message, monkeypatch, tmp_path, data_dir):
    status, out, err = main_with(["train", *args, "--data-dir", str(data_dir), "--out", str(tmp_path / "x.pt")],
                                 monkeypatch, RANK="0", **env)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "x.pt").exists()


def test_resume_with_another_number_of_processes_is_refused(monkeypatch, tmp_path, make_checkpoint):
    path = make_checkpoint(AlexNet(width_mult=0.25), tmp_path / "two.pt",
                           TrainConfig(width_mult=0.25, device="cpu", world_size=2), epoch=0, step=8)
    before = path.read_bytes()
    status, out, err = main_with(["train", "--resume", str(path)], monkeypatch)
    assert status == 2 and err.count("\n") == 1
    assert f"{path} was trained by 2 process(es), this job has 1: resume it with --nproc-per-node 2" in err
    assert path.read_bytes() == before


def test_a_bad_batch_size_through_torchrun_fails_with_one_line(tmp_path, data_dir):
    proc = run(torchrun(*train_args(data_dir, tmp_path / "bad.pt", "--batch-size", "33")), tmp_path)
    assert proc.returncode != 0
    line = "batch size 33 (images per step, all processes together) does not split evenly over 2 processes"
    assert proc.stderr.count(line) == 1, proc.stderr[-3000:]  # rank 0 says it, once
    assert not (tmp_path / "bad.pt").exists()


# Two processes equal one with the whole batch -------------------------------------------------

EQUIVALENCE = """
import sys
from alexnet_tutorial.config import TrainConfig
from alexnet_tutorial.run import train
cfg = TrainConfig(subset=512, epochs=1, batch_size=64, lr=0.01, dropout=0.0, shift=0, width_mult=0.25,
                  device="cpu", precision="fp32", data_dir=sys.argv[2])
train(cfg, out=sys.argv[1], progress=False)
"""


def test_two_processes_end_with_the_weights_of_one_with_the_whole_batch(tmp_path, data_dir):
    script = tmp_path / "fit.py"
    script.write_text(EQUIVALENCE)
    one = run([sys.executable, script, tmp_path / "one.pt", data_dir], tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = run(torchrun(script, tmp_path / "two.pt", data_dir), tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = read(tmp_path / "one.pt"), read(tmp_path / "two.pt")
    assert (a["config"]["world_size"], b["config"]["world_size"]) == (1, 2)
    torch.manual_seed(0)
    start = AlexNet(width_mult=0.25, dropout=0.0).state_dict()
    for name, weight in a["model"].items():
        moved = (weight - start[name]).norm()
        assert moved > 0, f"{name} did not train"
        assert (weight - b["model"][name]).norm() <= 1e-3 * moved, f"{name} differs between 1 and 2 processes"
    assert abs(a["history"][0]["train_loss"] - b["history"][0]["train_loss"]) < 1e-5
    assert a["history"][0]["test_accuracy"] == b["history"][0]["test_accuracy"]


# End to end through the command line, and a rank killed mid-epoch ------------------------------

@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("ddp")
    proc = run(torchrun(*train_args(data_dir, folder / "run.pt")), folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, proc


def test_two_processes_train_write_one_checkpoint_and_evaluate_reads_it(two_process_run, data_dir):
    folder, proc = two_process_run
    assert sorted(p.name for p in folder.iterdir()) == ["run.best.pt", "run.pt"]
    state = read(folder / "run.pt")
    assert state["config"]["world_size"] == 2 and (state["epoch"], state["step"]) == (1, 0)
    # rank 0 logs, once: the split of the global batch first, then one line per epoch and the summary
    lines = proc.stdout.splitlines()
    assert lines[0] == "2 processes (gloo): global batch 32 = 2 x 16 images per process, gradients averaged over all"
    assert sum(line.startswith("epoch 1/1") for line in lines) == 1
    assert sum(line.startswith("final test accuracy") for line in lines) == 1
    # the sharded, all-reduced evaluation saw all 10,000 test images: one process agrees with it
    check = run([sys.executable, "-m", "alexnet_tutorial", "evaluate", folder / "run.pt", "--device", "cpu",
                 "--data-dir", data_dir, "--json"], folder)
    assert check.returncode == 0, check.stderr[-3000:]
    result = json.loads(check.stdout)
    assert result["count"] == 10_000
    assert result["accuracy"] == state["history"][-1]["test_accuracy"]
    assert result["loss"] == pytest.approx(state["history"][-1]["test_loss"], rel=1e-5)


def test_a_killed_rank_is_restarted_and_the_run_ends_as_if_never_killed(two_process_run, data_dir, tmp_path,
                                                                       without_timing):
    reference, folder = two_process_run[0], tmp_path
    out = folder / "run.pt"
    log = open(folder / "job.log", "w+")  # a file, not a pipe: a full pipe would stall the job
    job = subprocess.Popen(torchrun(*train_args(data_dir, out), restarts=1), cwd=folder, stdout=log,
                           stderr=subprocess.STDOUT, text=True, env=environment())
    try:
        seen = wait_for_mid_epoch_checkpoint(job, out, log)
        os.kill(worker(job.pid, rank=1), signal.SIGKILL)
        assert job.wait(timeout=TIMEOUT_S) == 0, tail(log)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait(timeout=60)
    text = tail(log)
    log.close()
    assert 0 < seen["step"] < 128
    assert f"restart 1: resuming from {out}" in text, text
    full, resumed = read(reference / "run.pt"), read(out)
    for name, tensor in full["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), f"{name} differs after the restart"
    assert without_timing(resumed["history"]) == without_timing(full["history"])
    assert read(best_path(out))["epoch"] == 1


def wait_for_mid_epoch_checkpoint(job, out: Path, log) -> dict:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if job.poll() is not None:
            pytest.fail(f"the job ended before a mid-epoch checkpoint was seen:\n{tail(log)}")
        if out.exists():
            state = read(out)  # written atomically: always whole
            if state["epoch"] == 0 and state["step"] > 0:
                return state
        time.sleep(0.005)
    pytest.fail(f"no mid-epoch checkpoint in {out} after {TIMEOUT_S} s")


def worker(agent: int, rank: int) -> int:
    """The process id of torchrun's worker ``rank`` (the agent's children carry RANK)."""
    children = Path(f"/proc/{agent}/task/{agent}/children").read_text().split()
    for pid in children:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    raise AssertionError(f"no worker with RANK={rank} among {children}")


def tail(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-5000:]
