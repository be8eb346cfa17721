"""Data parallelism on PyTorch's own engine (chapter "More than one process").

``torchrun`` starts one process per device, sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``
for each, and restarts them all when one dies. Each process trains the same model on its own
slice of every batch; ``DistributedDataParallel`` averages the gradients (gloo on CPUs, NCCL
on CUDA GPUs), so every process takes the same step. Without torchrun's environment every
function here is a no-op and training runs in one process as before.

``TrainConfig.batch_size`` stays the number of images per optimizer step, all processes
together (the global batch): each process takes ``batch_size / world_size`` of them, and the
learning-rate schedule, which counts optimizer steps, is the one-process schedule for that batch.

Every process draws the same random numbers (same seed, slices of equal size), so the one
random-number state a checkpoint holds restores all of them; the price is that dropout draws
the same masks for each process's slice.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .errors import ConfigError


def world_size() -> int:
    """How many processes train together: torchrun's ``WORLD_SIZE``, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's number, 0 .. world_size - 1 (torchrun's ``RANK``, else 0)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True in the one process that logs and writes checkpoints (rank 0)."""
    return rank() == 0


def restarted() -> bool:
    """True when torchrun has restarted the job after a process died."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def setup(device: torch.device) -> torch.device:
    """Join torchrun's process group (once) and return this process's device.

    gloo on the CPU, NCCL on CUDA, where each process takes the GPU ``LOCAL_RANK``."""
    device = torch.device(device)
    if world_size() == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"several processes train on CPUs (gloo) or CUDA GPUs (NCCL), not on {device.type}")
    if not dist.is_initialized():
        store = None
        if restarted():  # torchrun keeps its store over restarts (pytorch/pytorch#135712): a fresh prefix
            base = next(dist.rendezvous("env://"))[0]
            store = dist.PrefixStore(f"restart-{os.environ['TORCHELASTIC_RESTART_COUNT']}", base)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=rank(),
                                world_size=world_size())
        atexit.register(dist.destroy_process_group)
    return device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """What to train: ``model`` itself in one process, ``DistributedDataParallel(model)`` in
    several (it shares the model's parameters and averages their gradients in ``backward``)."""
    if not dist.is_initialized():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_sum(*values):
    """Each value summed over all processes (the values themselves in one process)."""
    if not dist.is_initialized():
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    sums = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    return tuple(type(v)(s) for v, s in zip(values, sums.tolist()))


def shard(*tensors):
    """This process's contiguous share of each tensor (evaluation: every image counted once)."""
    return tuple(t.tensor_split(world_size())[rank()] for t in tensors)


def on_main_only(log, progress: bool):
    """The log function and progress switch for this process: silent except on rank 0."""
    return (log, progress) if is_main() else ((lambda *_: None), False)


def describe(batch_size: int) -> str | None:
    """The log line that says how the global batch is split, or None in one process."""
    n = world_size()
    if n == 1:
        return None
    backend = dist.get_backend() if dist.is_initialized() else "not started"
    return (f"{n} processes ({backend}): global batch {batch_size} = {n} x {batch_size // n} images per "
            "process, gradients averaged over all")


def check_config(cfg, resumed_from=None):
    """``cfg`` for this job: records the world size in a new run, refuses a resume by another
    number of processes, and settings that cannot be split over them. One-line errors."""
    n = world_size()
    if resumed_from is not None:
        saved = cfg.world_size
        if saved != n:
            raise ConfigError(f"{resumed_from} was trained by {saved} process(es), this job has {n}: resume it with "
                             f"--nproc-per-node {saved} (torchrun) so that the rest of the run replays exactly")
    else:
        if n > 1 and cfg.batch_size % n:
            raise ConfigError(f"batch size {cfg.batch_size} (images per step, all processes together) does not "
                             f"split evenly over {n} processes; choose a multiple of {n}")
        cfg = dataclasses.replace(cfg, world_size=n)
    if n == 1:
        return cfg
    if cfg.loader != "tensor":
        raise ConfigError(f"the {cfg.loader} loader runs in one process only; use --loader tensor with torchrun")
    images = cfg.subset or 60_000
    if n > images:
        raise ConfigError(f"{n} processes but only {images} training image(s): each process needs at least one; "
                         "start fewer processes (--nproc-per-node) or train on more images (--subset)")
    return cfg


def resume_after_restart(out, resume, log=print):
    """The checkpoint to continue from: ``resume``, or after a torchrun restart the run's own
    ``out`` when it has been written (instead of refusing to overwrite it)."""
    if resume is None and out is not None and restarted() and Path(out).exists():
        if is_main():
            log(f"restart {os.environ['TORCHELASTIC_RESTART_COUNT']}: resuming from {out}")
        return out
    return resume


def resumed_running(running: dict) -> tuple[float, int]:
    """The running loss sums of a resumed epoch for this process: the saved totals (summed
    over all processes when saved) on rank 0, nothing on the others."""
    return (running["loss_sum"], running["count"]) if is_main() else (0.0, 0)
