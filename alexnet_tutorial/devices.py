"""Where a run trains and in which number format (chapters "Training" and "Speed").

The book runs on a CPU, an NVIDIA GPU (CUDA) or an Apple GPU (MPS). ``auto`` settings pick
what is fast and safe on the machine at hand, and an explicit choice the machine cannot run
is an error, never a silent fallback.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")


def _has_mps() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, else Apple's MPS, else CPU. A named device that is not there is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _has_mps() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' is not available on this machine (no CUDA GPU); use --device auto or cpu")
    if name == "mps" and not _has_mps():
        raise ConfigError("device 'mps' is not available on this machine (no Apple GPU); use --device auto or cpu")
    if name not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    return torch.device(name)


def cpuinfo(text: str | None = None) -> dict[str, str]:
    """The first processor's fields in ``/proc/cpuinfo``, or in ``text`` in its format (empty
    where there is none)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (x86 AVX512-BF16 or AMX, Arm BF16)."""
    info = cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def describe_device(device: torch.device) -> str:
    """The hardware in words, for the first line of every run and benchmark: the GPU's
    name, or the CPU's model, thread count and whether it runs bf16 natively."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f"{torch.cuda.get_device_name(index)} (CUDA, compute capability {major}.{minor})"
    if device.type == "mps":
        return f"Apple GPU (MPS) on {platform.machine() or 'arm64'}"
    name = cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    threads = torch.get_num_threads()
    return f"{name} (CPU, {threads} thread{'s' if threads != 1 else ''}, {bf16})"


def pick_precision(name: str, device: torch.device) -> str:
    """Resolve ``auto``: bf16 on GPUs and CPUs that run it natively, fp16 (with a gradient
    scaler) on CUDA GPUs older than Ampere (Colab's T4), fp32 elsewhere. The CPU runs
    every format (bf16 and fp16 emulated where not native: see :func:`precision_note`);
    an explicit choice the device lacks is an error."""
    device = torch.device(device)
    if device.type == "cuda":
        supported = ("fp32", "fp16", "bf16") if torch.cuda.get_device_capability(device)[0] >= 8 else ("fp32", "fp16")
        auto = "bf16" if "bf16" in supported else "fp16"
    elif device.type == "cpu":
        supported = ("fp32", "bf16", "fp16")
        auto = "bf16" if cpu_has_native_bf16() else "fp32"
    else:  # MPS: autocast support varies with the macOS and torch version; fp32 always works
        supported, auto = ("fp32",), "fp32"
    if name == "auto":
        return auto
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name not in supported:
        raise ConfigError(f"precision {name} is not supported on {device.type} here; "
                         f"use {' or '.join(supported)} (or auto)")
    return name


def precision_note(precision: str, device: torch.device) -> str | None:
    """One line of warning for a precision that runs far slower than fp32 here, else None."""
    if torch.device(device).type != "cpu":
        return None
    if precision == "bf16" and not cpu_has_native_bf16():
        return ("note: this CPU has no native bf16 instructions (no AVX512-BF16 or AMX), so bf16 is emulated "
                "and runs many times slower than fp32; --precision auto picks fp32 here")
    if precision == "fp16":
        return "note: fp16 on the CPU is emulated and slow; it is there to test the gradient-scaler path"
    return None


def pick_channels_last(choice: bool | None, device: torch.device) -> bool:
    """Resolve the memory layout: ``None`` picks per device type, from measurements of one
    training step (``benchmarks/step.py``): NHWC (channels_last) on CUDA, where the tensor
    cores want it, and on the CPU, where it was 1.15x faster in fp32 on a Zen 4 and 1.36x on
    a Zen 3 (7% slower on a Zen 1); the plain layout on MPS, where it has not been measured."""
    if choice is not None:
        return bool(choice)
    return torch.device(device).type in ("cuda", "cpu")


def autocast(device: torch.device, precision: str):
    """The autocast context for a resolved precision; for fp32 no autocast at all (a null
    context, which every torch version and device accepts)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait until the device has finished its queued work (before reading a clock)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """The dtype for sums kept on the device: float64, except on MPS, which has none."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def memory_of(device: torch.device) -> int | None:
    """Bytes of memory on ``device`` (the GPU's, or the machine's for the CPU); None if unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


@contextlib.contextmanager
def cudnn_autotune(device: torch.device):
    """On CUDA let cuDNN time its convolution algorithms once per shape and keep the fastest;
    the global flag is put back afterwards."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
