"""A run's files: never lost, never overwritten by another run, every state resumable or refused in
one line (runfiles.py, and the run's checks before training). Each test is a fault a user met."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alexnet_tutorial import checkpoint as ckpt
from alexnet_tutorial import cli, run, runfiles, training
from alexnet_tutorial.config import TrainConfig
from alexnet_tutorial.errors import UserError

TINY = ["--subset", "64", "--epochs", "1", "--width-mult", "0.125", "--batch-size", "32", "--no-progress"]


def tiny(**changes) -> TrainConfig:
    return TrainConfig(**{**dict(subset=64, epochs=1, width_mult=0.125, batch_size=32, device="cpu"), **changes})


def cli_run(*argv):
    """Run the command line in this process; returns (status, stdout, stderr)."""
    out, err = _Text(), _Text()
    status = cli.main(list(argv), out=out, err=err)
    return status, out.text, err.text


class _Text:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass


@pytest.fixture(autouse=True)
def _data(data_dir, monkeypatch):
    monkeypatch.setenv("ALEXNET_TUTORIAL_DATA", str(data_dir))


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# 1. Two runs aimed at the same --out


def test_a_second_run_on_a_locked_out_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "same.pt"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from alexnet_tutorial import runfiles\n"
        f"with runfiles.hold_lock({str(out)!r}, 'run-one'):\n"
        "    print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        status, _, err = cli_run("train", *TINY, "--out", str(out))
        line = _one_line_error(err)
        assert status == 2 and "being written by another run" in line and f"pid {holder.pid}" in line
        assert "run-one" in line and not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    out = tmp_path / "run.pt"
    runfiles.lock_path(out).write_text("pid 999999 on elsewhere, run dead\n")  # no process holds it
    status, text, err = cli_run("train", *TINY, "--out", str(out))
    assert status == 0, err
    assert out.is_file() and not runfiles.lock_path(out).exists()


def test_a_finished_run_is_not_overwritten_by_a_new_one_without_force(tmp_path):
    out = tmp_path / "run.pt"
    assert cli_run("train", *TINY, "--out", str(out))[0] == 0
    before = out.read_bytes()
    status, _, err = cli_run("train", *TINY, "--seed", "1", "--out", str(out))
    assert status == 2 and f"--resume {out}" in _one_line_error(err)
    assert out.read_bytes() == before


# 2. A kill between the .best write and the main write


def test_a_best_file_without_its_main_file_resumes_with_the_command_the_error_gives(tmp_path):
    out = tmp_path / "run.pt"
    assert cli_run("train", *TINY, "--out", str(out))[0] == 0
    out.unlink()  # what a kill after the .best write and before the main write leaves
    status, _, err = cli_run("train", *TINY, "--out", str(out))
    line = _one_line_error(err)
    assert status == 2 and f"--resume {out}" in line
    status, text, err = cli_run("train", "--resume", str(out), "--epochs", "2", "--no-progress")
    assert status == 0, err
    assert "resuming after epoch 1" in text
    assert ckpt.load_checkpoint(out)["epoch"] == 2


# 3. --epochs below the run's length on resume


def test_resume_can_only_extend_a_run(tmp_path):
    out = tmp_path / "run.pt"
    assert cli_run("train", *TINY[:2], "--epochs", "2", *TINY[4:], "--out", str(out))[0] == 0
    before = out.read_bytes()
    status, text, err = cli_run("train", "--resume", str(out), "--epochs", "1", "--no-progress")
    line = _one_line_error(err)
    assert status == 2 and "can only be extended" in line and "at least 2" in line
    assert "final test accuracy" not in text and out.read_bytes() == before


# 5. Output targets that cannot work are refused before any training


@pytest.mark.parametrize("target", ["folder", "proc", "missing-folder"])
def test_a_bad_out_is_refused_before_training(tmp_path, monkeypatch, target):
    monkeypatch.setattr(run, "fit", lambda *a, **k: pytest.fail("trained before checking --out"))
    out = {"folder": tmp_path, "proc": Path("/proc/alexnet.pt"),
           "missing-folder": tmp_path / "no" / "such" / "run.pt"}[target]
    if target == "proc" and not Path("/proc").is_dir():
        pytest.skip("no /proc on this system")
    status, _, err = cli_run("train", *TINY, "--out", str(out), "--force")
    line = _one_line_error(err)
    assert status == 2 and str(out) in line and "--resume" not in line
    assert not list(tmp_path.glob("*.best.pt")) and not list(tmp_path.glob(".*.tmp"))


# 6. Ctrl-C


def test_ctrl_c_while_a_checkpoint_is_written_finishes_the_file_then_stops(tmp_path, monkeypatch):
    out = tmp_path / "run.pt"
    real_save = ckpt.save_checkpoint

    def save_interrupted(state, path):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives in the middle of the write
        return real_save(state, path)

    monkeypatch.setattr(ckpt, "save_checkpoint", save_interrupted)
    status, _, err = cli_run("train", *TINY, "--out", str(out))
    assert status == 130 and "interrupted" in _one_line_error(err)
    assert ckpt.load_checkpoint(ckpt.best_path(out))["epoch"] == 1  # the file being written is whole
    assert not list(tmp_path.glob(".*.tmp"))


def test_ctrl_c_at_start_up_gives_one_line_and_status_130(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # A shell's background job (nohup ... &) starts its commands with SIGINT ignored, and Python
    # keeps it so: the child gets Ctrl-C's default, as a command typed at a terminal does.
    process = subprocess.Popen([sys.executable, "-m", "alexnet_tutorial", "train", *TINY, "--out",
                                str(tmp_path / "run.pt")], stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.4)  # while PyTorch is being imported
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in _one_line_error(err)


def test_a_full_disk_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run.pt"
    assert cli_run("train", *TINY, "--out", str(out))[0] == 0
    before = out.read_bytes()

    def full_disk(state, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_checkpoint", full_disk)
    status, _, err = cli_run("train", "--resume", str(out), "--epochs", "2", "--no-progress")
    line = _one_line_error(err)
    assert status == 2 and "No space left on device" in line and f"cannot write {tmp_path}" in line
    assert out.read_bytes() == before


# 7. Numbers that cannot run


@pytest.mark.parametrize("flags, words", [
    (["--lr", "1e39"], "learning rate"), (["--lr", "1e10"], "learning rate"),
    (["--width-mult", "1e4"], "width_mult"), (["--epochs", "99999999"], "epochs")])
def test_numeric_flags_out_of_range_are_one_line(tmp_path, flags, words):
    status, _, err = cli_run("train", *TINY, *flags, "--out", str(tmp_path / "run.pt"))
    assert status == 2 and words in _one_line_error(err)


def test_a_width_too_large_for_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "memory_of", lambda device: 2**30)  # a machine with 1 GiB
    monkeypatch.setattr(run, "AlexNet", lambda **k: pytest.fail("allocated the network"))
    status, _, err = cli_run("train", *TINY[:4], "--width-mult", "8", "--no-progress", "--out",
                             str(tmp_path / "run.pt"))
    line = _one_line_error(err)
    assert status == 2 and "247,132,170 parameters" in line and "1.0 GiB" in line


def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run.pt"
    assert cli_run("train", *TINY[:2], "--epochs", "2", *TINY[4:], "--out", str(out))[0] == 0
    good = out.read_bytes()
    real_add = training.RunningLoss.add
    monkeypatch.setattr(training.RunningLoss, "add", lambda self, loss, n: real_add(self, loss * float("nan"), n))
    status, _, err = cli_run("train", "--resume", str(out), "--epochs", "3", "--no-progress")
    line = _one_line_error(err)
    assert status == 2 and "diverged" in line and "step 6" in line and "learning rate" in line
    assert out.read_bytes() == good


# 10. The JSON summary names only files that exist


def test_the_summary_names_no_best_file_that_does_not_exist(tmp_path):
    out = tmp_path / "run.pt"
    assert cli_run("train", *TINY[:2], "--epochs", "2", *TINY[4:], "--out", str(out))[0] == 0
    ckpt.best_path(out).unlink()
    state = ckpt.load_checkpoint(out)
    state["best"] = {"epoch": 1, "accuracy": 1.0}  # an epoch no later one beats, whose weights are nowhere
    ckpt.save_checkpoint(state, out)
    status, text, err = cli_run("train", "--resume", str(out), "--epochs", "3", "--no-progress", "--json")
    assert status == 0, err
    summary = json.loads(text)
    assert summary["best_epoch"] == 1 and summary["best_checkpoint"] is None
    assert not ckpt.best_path(out).exists()


# 11. Orphan temporary files


def test_orphan_temporary_files_of_the_run_are_removed_on_the_next_start(tmp_path):
    out = tmp_path / "run.pt"
    orphans = [tmp_path / ".run.pt.x1y2.tmp", tmp_path / ".run.best.pt.z3.tmp"]
    other = tmp_path / ".other.pt.q.tmp"
    for path in orphans + [other]:
        path.write_bytes(b"half a checkpoint")
    assert cli_run("train", *TINY, "--out", str(out))[0] == 0
    assert not any(path.exists() for path in orphans) and other.exists()


# 14. Symbolic links and another run's .best


def test_a_symlinked_checkpoint_is_written_through_the_link(tmp_path):
    target, link = tmp_path / "store" / "run.pt", tmp_path / "run.pt"
    target.parent.mkdir()
    assert cli_run("train", *TINY[:2], "--epochs", "1", *TINY[4:], "--out", str(target))[0] == 0
    link.symlink_to(target)
    assert cli_run("train", "--resume", str(link), "--epochs", "2", "--no-progress")[0] == 0
    assert link.is_symlink() and ckpt.load_checkpoint(target)["epoch"] == 2


def test_another_runs_best_file_is_replaced_with_a_note(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    assert cli_run("train", *TINY, "--out", str(a))[0] == 0
    assert cli_run("train", *TINY, "--seed", "1", "--out", str(b))[0] == 0
    ckpt.best_path(a).write_bytes(ckpt.best_path(b).read_bytes())  # a's .best now belongs to run b
    status, text, err = cli_run("train", "--resume", str(a), "--epochs", "2", "--no-progress")
    assert status == 0, err
    assert f"{ckpt.best_path(a)} held epoch 1 of another run" in text or "from another run" in text


def test_user_errors_share_one_base_class():
    for error in (runfiles.OutputError, run.Diverged, ckpt.CheckpointError):
        assert issubclass(error, UserError)
    with pytest.raises(UserError):
        runfiles.check_target(Path("/"))
