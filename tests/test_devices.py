"""Device, precision and memory layout: what ``auto`` picks on each kind of machine, and
what an explicit choice the machine lacks does."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from torch import nn

from alexnet_tutorial.devices import (
    autocast,
    describe_device,
    pick_channels_last,
    pick_device,
    pick_precision,
    precision_note,
)

devices = importlib.import_module("alexnet_tutorial.devices")
CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.fixture
def cpuinfo(monkeypatch, tmp_path):
    """Point the CPU probe at a made-up /proc/cpuinfo with the given model name and flags."""

    def write(flags: str, name: str = "Test CPU 9000", key: str = "flags"):
        path = tmp_path / "cpuinfo"
        path.write_text(f"processor\t: 0\nmodel name\t: {name}\n{key}\t\t: {flags}\n\nprocessor\t: 1\n")
        monkeypatch.setattr(devices, "Path", lambda _name: path)

    return write


def test_pick_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == CPU
    assert pick_device("cpu") == CPU
    with pytest.raises(ValueError, match="'cuda' is not available"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="'mps' is not available"):
        pick_device("mps")
    with pytest.raises(ValueError, match="device must be one of"):
        pick_device("tpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto") == MPS
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == CUDA


@pytest.mark.parametrize("flags, key, expected", [
    ("fpu sse avx512f avx512_bf16 amx_tile", "flags", True),
    ("fpu sse amx_bf16", "flags", True),
    ("fpu sse avx2 fma", "flags", False),
    ("fp asimd bf16 i8mm", "Features", True),
    ("fp asimd", "Features", False),
])
def test_cpu_bf16_detection_reads_the_cpu_flags(cpuinfo, flags, key, expected):
    cpuinfo(flags, key=key)
    assert devices.cpu_has_native_bf16() is expected


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_pick_precision_on_cpu(cpuinfo, native, expected):
    cpuinfo("avx2 avx512_bf16" if native else "avx2")
    assert pick_precision("auto", CPU) == expected
    for name in ("fp32", "bf16", "fp16"):  # all run on a CPU, emulated where not native
        assert pick_precision(name, CPU) == name
    with pytest.raises(ValueError, match="precision must be one of"):
        pick_precision("fp8", CPU)


@pytest.mark.parametrize("capability, expected", [((8, 0), "bf16"), ((9, 0), "bf16"), ((7, 5), "fp16")])
def test_pick_precision_on_cuda(monkeypatch, capability, expected):
    # Colab's free T4 is compute capability 7.5: fp16 with a gradient scaler.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _device=None: capability)
    assert pick_precision("auto", CUDA) == expected
    assert pick_precision("fp16", CUDA) == "fp16"
    assert pick_precision("fp32", CUDA) == "fp32"
    if expected == "fp16":
        with pytest.raises(ValueError, match="bf16 is not supported on cuda"):
            pick_precision("bf16", CUDA)


def test_pick_precision_on_mps():
    assert pick_precision("auto", MPS) == "fp32"
    for name in ("bf16", "fp16"):
        with pytest.raises(ValueError, match=f"{name} is not supported on mps"):
            pick_precision(name, MPS)


def test_bf16_on_a_cpu_without_it_comes_with_a_warning(cpuinfo):
    cpuinfo("avx2 fma")
    assert "emulated" in precision_note("bf16", CPU) and "\n" not in precision_note("bf16", CPU)
    assert "emulated" in precision_note("fp16", CPU)
    assert precision_note("fp32", CPU) is None
    cpuinfo("avx512f avx512_bf16")
    assert precision_note("bf16", CPU) is None
    assert precision_note("fp16", CUDA) is None


def test_fp32_uses_no_autocast_at_all(monkeypatch):
    # torch before 2.5 raised when torch.autocast was built for MPS, even disabled: fp32 must
    # not build one, on any device.
    def refuse(*_args, **_kwargs):
        raise RuntimeError("torch.autocast was called")

    monkeypatch.setattr(torch, "autocast", refuse)
    for device in (CPU, CUDA, MPS):
        with autocast(device, "fp32"):
            pass
    with pytest.raises(RuntimeError, match="torch.autocast was called"):
        autocast(CPU, "bf16")


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_runs_the_model_in_the_chosen_format_on_cpu(seeded_model, train_sample, precision, dtype):
    model = seeded_model(width_mult=0.25)
    with autocast(CPU, precision):
        logits = model(train_sample[0][:4])
    assert logits.dtype == dtype
    with autocast(CPU, "fp32"):
        assert model(train_sample[0][:4]).dtype == torch.float32


def test_channels_last_auto_follows_the_device():
    assert pick_channels_last(None, CUDA) is True
    assert pick_channels_last(None, CPU) is True
    assert pick_channels_last(None, MPS) is False
    assert pick_channels_last(False, CUDA) is False
    assert pick_channels_last(True, MPS) is True


def test_describe_device_names_the_cpu_and_its_bf16(cpuinfo):
    cpuinfo("avx2", name="AMD EPYC 7B13")
    text = describe_device(CPU)
    assert text.startswith("AMD EPYC 7B13 (CPU, ") and f"{torch.get_num_threads()} thread" in text
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert "(CPU, 1 thread, " in describe_device(CPU)
        torch.set_num_threads(2)
        assert "(CPU, 2 threads, " in describe_device(CPU)
    finally:
        torch.set_num_threads(threads)
    assert "no native bf16" in text
    cpuinfo("avx512_bf16", name="AMD EPYC 9B14")
    assert "native bf16" in describe_device(CPU) and "no native" not in describe_device(CPU)


def test_describe_device_names_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _i=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _i=None: (7, 5))
    assert describe_device(CUDA) == "Tesla T4 (CUDA, compute capability 7.5)"


def test_a_training_step_in_bf16_on_cpu_updates_float32_weights(seeded_model, train_sample):
    from alexnet_tutorial.config import TrainConfig
    from alexnet_tutorial.training import RunningLoss, make_optimizer, train_steps

    model = seeded_model(width_mult=0.25)
    cfg = TrainConfig(device="cpu", precision="bf16").resolved()
    optimizer = make_optimizer(model, cfg, CPU)
    before = model.fc3.weight.detach().clone()
    running = RunningLoss(CPU)
    batch = (train_sample[0][:16], train_sample[1][:16])
    assert train_steps(model, [batch], optimizer, nn.CrossEntropyLoss(), lambda _step: cfg.lr, 0, running,
                       device=CPU, precision="bf16", channels_last=True) == 1
    assert running.sum.dtype == torch.float64 and running.count == 16 and math.isfinite(running.mean())
    assert model.fc3.weight.dtype == torch.float32 and not torch.equal(model.fc3.weight, before)
