"""Training, resuming, evaluating and predicting on an accelerator (CUDA or Apple's MPS).

Marked ``gpu``: skipped (and counted as skipped) where there is none, as in CI. Run them with
``pytest -m gpu``, or all GPU checks at once with ``bash benchmarks/gpu_check.sh``. Setting
``ALEXNET_TUTORIAL_TEST_DEVICE=cpu`` runs the same tests on the CPU, to check the tests
themselves on a machine without a GPU.
"""

from __future__ import annotations

import os

import pytest
import torch

from alexnet_tutorial import checkpoint as ckpt
from alexnet_tutorial.cli import main
from alexnet_tutorial.config import TrainConfig
from alexnet_tutorial.devices import cpu_has_native_bf16, pick_device, pick_precision
from alexnet_tutorial.errors import ConfigError
from alexnet_tutorial.run import train

pytestmark = pytest.mark.gpu
quiet = dict(progress=False, log=lambda _msg: None)


@pytest.fixture(scope="module")
def device() -> torch.device:
    chosen = os.environ.get("ALEXNET_TUTORIAL_TEST_DEVICE")
    if chosen:
        return pick_device(chosen)
    found = pick_device("auto")
    if found.type == "cpu":
        pytest.skip("no CUDA or MPS device on this machine")
    return found


def precisions(device: torch.device) -> list[str]:
    """The precisions this device runs natively (emulated ones would take minutes here)."""
    names = []
    for name in ("fp32", "bf16", "fp16"):
        try:
            pick_precision(name, device)
        except ConfigError:
            continue
        if device.type == "cpu" and name != "fp32" and not (name == "bf16" and cpu_has_native_bf16()):
            continue
        names.append(name)
    return names


@pytest.fixture
def cfg(data_dir, device):
    def make(**overrides):
        # 6,400 images in batches of 32: 200 steps an epoch.
        settings = dict(subset=6400, stratified=True, epochs=1, batch_size=32, lr=0.01, dropout=0.0,
                        label_smoothing=0.0, shift=0, device=device.type, data_dir=str(data_dir))
        return TrainConfig(**{**settings, **overrides})

    return make


def test_a_few_hundred_steps_learn_in_every_precision(cfg, device):
    for precision in precisions(device):
        result = train(cfg(precision=precision), **quiet)
        assert result.precision == precision and result.device.startswith(device.type)
        assert next(result.model.parameters()).device.type == device.type
        assert result.history[-1]["test_accuracy"] > 0.9, precision


def test_resume_on_the_device_matches_an_uninterrupted_run(cfg, device, tmp_path, stop_after):
    precision = precisions(device)[-1]  # fp16 with its scaler where there is one
    settings = cfg(precision=precision, epochs=2, subset=1280, checkpoint_every=15)
    whole = train(settings, out=tmp_path / "whole.pt", **quiet)
    stop_after(1, 5)  # 40 steps an epoch, a checkpoint every 15 of the run: step 45 is the second epoch's 5th
    with pytest.raises(KeyboardInterrupt):
        train(settings, out=tmp_path / "cut.pt", **quiet)
    saved = ckpt.load_checkpoint(tmp_path / "cut.pt")
    assert (saved["device"], saved["precision"]) == (device.type, precision)
    resumed = train(None, resume=tmp_path / "cut.pt", **quiet)
    # Bit-identical on the CPU; on a GPU equal up to float rounding (cuDNN and atomics may
    # sum in another order from one process to the next).
    for name, tensor in whole.model.state_dict().items():
        other = resumed.model.state_dict()[name]
        if device.type == "cpu":
            assert torch.equal(tensor, other), name
        else:
            assert torch.allclose(tensor.float(), other.float(), rtol=1e-3, atol=1e-4), name
    assert abs(whole.history[-1]["test_accuracy"] - resumed.history[-1]["test_accuracy"]) <= 0.002


def test_compile_captures_the_step_and_says_how_long_it_took(cfg, device):
    lines = []
    result = train(cfg(subset=2048, compile=True), progress=False, log=lines.append)
    assert result.compile_seconds is not None and result.compile_seconds > 0
    assert any(line.startswith("torch.compile: the first step (compiling) took") for line in lines)
    assert result.history[-1]["test_accuracy"] > 0.8


def test_cudnn_autotuning_is_on_while_training_and_put_back_after(cfg, device, monkeypatch):
    if device.type != "cuda":
        pytest.skip("cuDNN is CUDA's")
    from alexnet_tutorial import run

    seen = []
    real = run.train_steps
    monkeypatch.setattr(run, "train_steps",
                        lambda *a, **k: (seen.append(torch.backends.cudnn.benchmark), real(*a, **k))[1])
    torch.backends.cudnn.benchmark = False
    train(cfg(subset=256), **quiet)
    assert seen and all(seen) and torch.backends.cudnn.benchmark is False


def test_evaluate_and_predict_run_on_the_device(cfg, device, tmp_path, capsys, draw_digit):
    out = tmp_path / "run.pt"
    train(cfg(), out=out, **quiet)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--device", device.type, "--data-dir", cfg().data_dir, "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 10_000 and result["accuracy"] > 0.9
    image = tmp_path / "seven.png"
    draw_digit("7").save(image)
    assert main(["predict", str(out), str(image), "--device", device.type, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["digit"] == 7
