"""The command line: one line on stderr and exit status 2 for every bad input, a traceback for
every bug; JSON that parses."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
import torch
import torchvision

from alexnet_tutorial import cli
from alexnet_tutorial import run as run_mod
from alexnet_tutorial.checkpoint import best_path, load_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    status = cli.main([str(a) for a in argv], out, err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def files(tmp_path, seeded_model, make_checkpoint, draw_digit):
    """A good checkpoint, a good digit image and a few bad files, all in tmp_path."""
    good = make_checkpoint(seeded_model(width_mult=0.25), tmp_path / "good.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[:5000])
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    text_png = tmp_path / "notes.png"
    text_png.write_text("not an image\n")
    digit = tmp_path / "seven.png"
    draw_digit(text="7", size=(90, 120)).save(digit)
    (tmp_path / "empty").mkdir()
    state = torch.load(good, weights_only=True)
    del state["model"]["fc3.bias"]
    misfit = tmp_path / "misfit.pt"
    torch.save(state, misfit)
    return {"good": good, "corrupt": corrupt, "tensor": tensor, "text_png": text_png, "digit": digit, "misfit": misfit,
            "missing_pt": tmp_path / "missing.pt", "missing_png": tmp_path / "missing.png",
            "empty_dir": tmp_path / "empty", "dir": tmp_path}


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as one without CUDA, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def offline(monkeypatch):
    def fail(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error network unreachable>")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fail)


# (argv with {name} placeholders for the files fixture, a fragment the one-line message must hold)
BAD_INPUTS = [
    (["train", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["train", "--epochs", "-1"], "--epochs: must be at least 1, got -1"),
    (["train", "--epochs", "0"], "--epochs: must be at least 1, got 0"),
    (["train", "--epochs", "two"], "--epochs: expected a whole number, got 'two'"),
    (["train", "--lr", "abc"], "--lr: expected a number, got 'abc'"),
    (["train", "--lr", "nan"], "--lr: must be a positive number"),
    (["train", "--lr", "-0.1"], "--lr: must be a positive number"),
    (["train", "--batch-size", "0"], "--batch-size: must be at least 1"),
    (["train", "--width-mult", "0"], "--width-mult: must be a positive number"),
    (["train", "--subset", "70000", "--out", "{dir}/new.pt"], "subset must be between 1 and 60000"),
    (["train", "--device", "cuda", "--out", "{dir}/new.pt"], "device 'cuda' is not available"),
    (["train", "--resume", "{missing_pt}"], "{missing_pt}: no such file"),
    (["train", "--resume", "{corrupt}"], "{corrupt}: not a readable PyTorch checkpoint"),
    (["train", "--resume", "{good}", "--lr", "0.5"], "--lr 0.5 differs from 0.05, the setting of the run in"),
    (["train", "--resume", "{misfit}"], "{misfit}: weights do not fit the model"),
    (["train", "--out", "{good}"], "{good} exists"),
    (["train", "--out", "{dir}/no-such-folder/run.pt"], "does not exist"),
    (["train", "--data-dir", "{empty_dir}", "--out", "{dir}/new.pt"], "MNIST is not in {empty_dir}"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["evaluate", "{missing_pt}"], "{missing_pt}: no such file"),
    (["evaluate", "{corrupt}"], "{corrupt}: not a readable PyTorch checkpoint"),
    (["evaluate", "{tensor}"], "{tensor}: a PyTorch file, but not an alexnet-tutorial checkpoint"),
    (["evaluate", "{dir}"], "is a folder"),
    (["evaluate", "{good}", "--device", "cuda"], "device 'cuda' is not available"),
    (["evaluate", "{good}", "--data-dir", "{empty_dir}"], "MNIST is not in {empty_dir}"),
    (["evaluate"], "required: checkpoint"),
    (["predict", "{good}", "{missing_png}"], "{missing_png}: no such file"),
    (["predict", "{good}", "{text_png}"], "{text_png}: not an image PIL can read"),
    (["predict", "{good}", "{dir}"], "is a folder, not an image"),
    (["predict", "{missing_pt}", "{digit}"], "{missing_pt}: no such file"),
    (["predict", "{tensor}", "{digit}"], "not an alexnet-tutorial checkpoint"),
    (["predict", "{good}"], "required: IMAGE"),
    (["fly"], "invalid choice: 'fly'"),
    ([], "the following arguments are required"),
]


@pytest.mark.parametrize("argv, fragment", BAD_INPUTS, ids=[" ".join(a) or "(nothing)" for a, _f in BAD_INPUTS])
def test_bad_input_gives_one_line_and_status_2(files, no_cuda, offline, argv, fragment):
    argv = [a.format(**files) for a in argv]
    before = {p.name: p.read_bytes() for p in files["dir"].iterdir() if p.is_file()}
    status, out, err = run(argv)
    assert status == 2
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("alexnet-tutorial")
    assert "Traceback" not in err and out == ""
    assert fragment.format(**files) in err
    after = {p.name: p.read_bytes() for p in files["dir"].iterdir() if p.is_file()}
    assert after == before  # a refused command writes nothing


def test_exit_status_of_the_real_program(tmp_path):
    missing = tmp_path / "missing.pt"
    for argv, fragment in ((["train", "--epochs", "0"], "--epochs"), (["evaluate", str(missing)], str(missing))):
        proc = subprocess.run([sys.executable, "-m", "alexnet_tutorial", *argv], capture_output=True, text=True,
                              cwd=REPO, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and fragment in proc.stderr and "Traceback" not in proc.stderr
        assert proc.stdout == ""


@pytest.mark.parametrize("error", [RuntimeError("a bug"), ValueError("a bug"), KeyError("a bug")],
                         ids=["RuntimeError", "ValueError", "KeyError"])
def test_an_internal_error_keeps_its_traceback(tmp_path, monkeypatch, error):
    # Only the package's own UserError is the user's mistake; anything else is a bug in the
    # package, and hiding it as a one-line exit 2 would hide where it happened.
    def broken(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(run_mod, "build_loaders", broken)  # inside train, after the settings were checked
    with pytest.raises(type(error), match="a bug"):
        run(["train", "--subset", "64", "--epochs", "1", "--device", "cpu", "--out", tmp_path / "run.pt",
             "--no-progress"])
    assert not (tmp_path / "run.pt").exists()


def test_ctrl_c_gives_one_line_and_status_130(tmp_path, monkeypatch):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "build_loaders", interrupted)
    status, out, err = run(["train", "--subset", "64", "--epochs", "1", "--device", "cpu", "--out",
                            tmp_path / "run.pt", "--no-progress"])
    assert status == 130 and out == "" and err.count("\n") == 1 and "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no checkpoint, no lock file left


def test_the_json_summary_has_no_best_checkpoint_when_there_is_no_best_file(tiny, tmp_path, monkeypatch):
    # A checkpoint copied without its .best file after a worse epoch than its best, resumed, and
    # no later epoch beats the best: its weights are in no file, and the summary says so.
    accuracies = iter([0.9, 0.5, 0.4, 0.3])
    monkeypatch.setattr(run_mod, "evaluate", lambda *_a, **_k: (lambda a: {
        "loss": 1.0, "accuracy": a, "correct": round(a * 100), "count": 100})(next(accuracies)))
    first = tmp_path / "first"
    first.mkdir()
    run_mod.train(tiny(epochs=2), out=first / "run.pt", progress=False, log=lambda _msg: None)
    copy = tmp_path / "run.pt"
    copy.write_bytes((first / "run.pt").read_bytes())
    status, out, err = run(["train", "--resume", copy, "--epochs", "3", "--json", "--no-progress"])
    assert status == 0, err
    summary = json.loads(out)
    assert summary["best_checkpoint"] is None and summary["best_epoch"] == 1 and summary["checkpoint"] == str(copy)
    assert not best_path(copy).exists()
    status, out, err = run(["train", "--resume", first / "run.pt", "--epochs", "3", "--json", "--no-progress"])
    assert status == 0, err  # beside its .best file: named
    assert json.loads(out)["best_checkpoint"] == str(best_path(first / "run.pt"))


def test_the_command_line_starts_without_loading_pytorch():
    # Importing torch takes seconds: --help, a usage error and Ctrl-C must not wait for it.
    code = ("import sys, alexnet_tutorial, alexnet_tutorial.cli; "
            "print(sorted(m for m in ('torch', 'torchvision', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_the_package_names_resolve_on_first_use():
    import alexnet_tutorial
    from alexnet_tutorial import config, run, training

    assert alexnet_tutorial.train is run.train and alexnet_tutorial.fit is run.fit
    assert alexnet_tutorial.TrainConfig is config.TrainConfig and alexnet_tutorial.evaluate is training.evaluate
    assert set(alexnet_tutorial.__all__) <= set(dir(alexnet_tutorial))
    with pytest.raises(AttributeError, match="no attribute 'make_scheduler'"):
        alexnet_tutorial.make_scheduler  # noqa: B018


def test_existing_out_is_kept_without_force_and_replaced_with_it(data_dir, small_test_set, tmp_path):
    out = tmp_path / "run.pt"
    out.write_bytes(b"an earlier run")
    common = ["train", "--subset", "64", "--epochs", "1", "--batch-size", "32", "--width-mult", "0.25",
              "--device", "cpu", "--data-dir", data_dir, "--out", out, "--no-progress"]
    status, _out, err = run(common)
    assert status == 2 and "--force" in err
    assert out.read_bytes() == b"an earlier run"
    status, _out, err = run([*common, "--force"])
    assert status == 0, err
    assert load_checkpoint(out)["epoch"] == 1
    assert load_checkpoint(best_path(out))["epoch"] == 1
    # The best file alone also blocks a new run.
    out.unlink()
    best = best_path(out).read_bytes()
    status, _out, err = run(common)
    assert status == 2 and str(best_path(out)) in err
    assert best_path(out).read_bytes() == best


@pytest.mark.slow
def test_train_evaluate_predict_smoke_run_as_json(data_dir, tmp_path, files):
    ckpt_path = tmp_path / "smoke.pt"
    status, out, err = run(["train", "--subset", "512", "--epochs", "1", "--json", "--no-progress",
                            "--data-dir", data_dir, "--out", ckpt_path])
    assert status == 0, err
    trained = json.loads(out)
    assert {"history", "test_accuracy", "test_loss", "checkpoint", "best_checkpoint"} <= set(trained)
    assert len(trained["history"]) == 1 and trained["history"][0]["epoch"] == 1
    assert trained["test_accuracy"] == trained["history"][-1]["test_accuracy"]
    assert 0 <= trained["test_accuracy"] <= 1 and trained["test_loss"] > 0
    assert "training on" in err  # the log goes to stderr with --json, so stdout is pure JSON

    status, out, err = run(["evaluate", ckpt_path, "--json", "--data-dir", data_dir])
    assert status == 0, err
    evaluated = json.loads(out)
    assert {"accuracy", "loss"} <= set(evaluated) and evaluated["count"] == 10_000
    assert evaluated["accuracy"] == pytest.approx(trained["test_accuracy"], abs=0.01)
    assert evaluated["loss"] == pytest.approx(trained["test_loss"], rel=0.05)

    status, out, err = run(["predict", ckpt_path, files["digit"], files["digit"], "--json"])
    assert status == 0, err
    predicted = json.loads(out)
    assert len(predicted) == 2 and predicted[0]["image"] == str(files["digit"])
    for item in predicted:
        assert 0 <= item["digit"] <= 9 and len(item["top3"]) == 3
        probabilities = [t["probability"] for t in item["top3"]]
        assert sum(probabilities) <= 1 + 1e-6 and probabilities == sorted(probabilities, reverse=True)
        assert item["digit"] == item["top3"][0]["digit"]

    status, out, err = run(["predict", ckpt_path, files["digit"]])
    assert status == 0 and out.startswith(f"{files['digit']}: ") and "top 3" in out
