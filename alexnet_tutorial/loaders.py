"""The loaders a run trains and evaluates on, replayable from any step (chapters "Training" and
"More than one process").

:func:`build_loaders` makes the pair a :class:`~alexnet_tutorial.config.TrainConfig` asks for;
:func:`epoch_batches` gives an epoch's batches from a given step on, in the order a run that was
never interrupted sees them, which is what makes resuming exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from . import distributed
from .data import TensorLoader, epoch_seed, make_loaders, mnist_tensors

if TYPE_CHECKING:
    from .config import TrainConfig


def epoch_batches(loader, seed: int, epoch: int, start_step: int):
    """The batches of epoch ``epoch`` from ``start_step`` on, in the order a run that was never
    interrupted would see them."""
    if isinstance(loader, TensorLoader):
        loader.set_epoch(epoch, start_step)
        return iter(loader)
    generator = getattr(loader, "generator", None)
    if generator is not None:  # a DataLoader: its shuffle order follows this generator
        generator.manual_seed(epoch_seed(seed, epoch))
    it = iter(loader)
    # Skipped batches may draw random shifts from the global generator; the checkpoint
    # already holds its state after those draws, so skip without touching it.
    with torch.random.fork_rng(devices=[]):
        for _ in range(start_step):
            next(it)
    return it


def build_loaders(cfg: TrainConfig, device: torch.device):
    """The training and test loaders ``cfg.loader`` asks for, on ``device``. With ``compile``
    every training batch has the same shape (a short last batch is dropped)."""
    if cfg.loader == "torchvision":
        return make_loaders(cfg.batch_size, cfg.data_dir, cfg.subset, cfg.stratified, cfg.seed, cfg.eval_batch_size,
                            shift=cfg.shift, drop_last=cfg.compile)
    train_x, train_y = mnist_tensors(True, cfg.data_dir, device, cfg.subset, cfg.stratified)
    test_x, test_y = mnist_tensors(False, cfg.data_dir, device)
    train_loader = TensorLoader(train_x, train_y, cfg.batch_size, shuffle=True, seed=cfg.seed, shift=cfg.shift,
                                drop_last=cfg.compile, rank=distributed.rank(),
                                world_size=distributed.world_size())  # a slice of every batch per process
    test_loader = TensorLoader(*distributed.shard(test_x, test_y), cfg.eval_batch_size)
    return train_loader, test_loader
