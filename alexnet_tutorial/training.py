"""The training loop, its optimizer and schedule, and evaluation (chapter "Training").

Plain functions with explicit arguments: :func:`train_steps` is the loop chapter 4 writes by
hand, plus a few named differences; :func:`evaluate` gets the model it evaluates (the
original's ``validate`` read a global ``net`` instead). Nothing here knows about checkpoints,
processes or logs: the run around the loop (``run.py``) decides about those.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .config import TrainConfig, require_resolved
from .devices import accumulator_dtype, autocast
from .model import eval_mode


class RunningLoss:
    """The loss summed over the images trained so far, kept on the device: adding to it never
    makes the CPU wait for a GPU, and :meth:`mean` reads it when a number is needed."""

    def __init__(self, device, loss_sum: float = 0.0, count: int = 0):
        self.sum = torch.tensor(loss_sum, dtype=accumulator_dtype(device), device=device)
        self.count = count

    def add(self, loss: torch.Tensor, images: int) -> None:
        self.sum += loss * images
        self.count += images

    def mean(self) -> float:
        return self.sum.item() / max(self.count, 1)


class WeightAverage:
    """An exponential moving average of ``model``'s weights, updated after every step
    (``torch.optim.swa_utils.AveragedModel``). Update n (0-based) moves the average towards the
    weights by 1 - d, with the decay d = min(``decay``, (1 + n) / (10 + n)): the first update
    copies the weights and the early ones, made from near the random start, soon weigh nothing.
    With ``decay`` 0.99 the average spans about the last 100 steps; :attr:`module` is the
    averaged network, which the run evaluates and hands out."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.averaged = AveragedModel(model, multi_avg_fn=self._move, use_buffers=True)
        self.source = model  # the network being trained (not a wrapper around it)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @property
    def updates(self) -> int:
        """Updates so far (kept on the CPU: reading it never waits for a GPU)."""
        return int(self.averaged.n_averaged)

    def decay_now(self) -> float:
        """The decay of the next update."""
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n))

    def _move(self, averaged: list, current: list, _n) -> None:
        torch._foreach_lerp_(averaged, current, 1 - self.decay_now())

    def update(self) -> None:
        self.averaged.update_parameters(self.source)

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the averaged weights (as ``nn.Module.state_dict`` gives them,
        on the model's device) and the number of updates."""
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.averaged.n_averaged.fill_(int(state["updates"]))


def make_optimizer(model: nn.Module, cfg: TrainConfig, device=None) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; weight decay on weights only, not on biases. On CUDA the
    update of all parameters runs as one fused kernel."""
    cfg = require_resolved(cfg, "make_optimizer")
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device is not None and torch.device(device).type == "cuda"
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                           **({"fused": True} if fused else {}))


def learning_rate(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) in a run of ``total_steps``.
    ``onecycle``: up linearly from ``cfg.lr / warm`` to ``cfg.lr`` over the first ``warmup``
    share of the steps, then down linearly to 0 at the end; ``constant``: ``cfg.lr`` throughout."""
    if cfg.schedule == "constant":
        return cfg.lr
    warm = max(1, round(cfg.warmup * total_steps))
    if step < warm:
        return cfg.lr * ((step + 1) / warm)
    return cfg.lr * max(0.0, (total_steps - step) / max(1, total_steps - warm))


def train_steps(model, batches, optimizer, loss_fn, lr_at, step: int, running: RunningLoss, *,
                device, precision: str = "fp32", scaler=None, channels_last: bool = False,
                average: WeightAverage | None = None) -> int:
    """Train ``model`` on every (images, labels) in ``batches``: chapter 4's loop, plus the
    differences it lists. ``step`` counts the optimizer steps taken before these, and sets the
    learning rate (``lr_at(step)``); returns the count after them. Each batch's loss is added
    to ``running`` on the device, so nothing here waits for a GPU. ``average``: updated after
    every step."""
    scaler = scaler or torch.amp.GradScaler(enabled=False)  # scales only in fp16
    layout = torch.channels_last if channels_last else torch.preserve_format
    model.train()
    for images, labels in batches:
        images = images.to(device, non_blocking=True, memory_format=layout)
        labels = labels.to(device, non_blocking=True)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)             # warm-up, then decay: a function of the step
        with autocast(device, precision):        # bf16 or fp16 where chosen; nothing in fp32
            loss = loss_fn(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()            # fp16: scaled up, so small gradients survive
        scaler.step(optimizer)                   # fp16: skipped if a gradient overflowed
        scaler.update()
        if average is not None:
            average.update()                     # the moving average of the weights
        running.add(loss.detach(), len(labels))
        step += 1
    return step


@torch.no_grad()
def evaluate(model: nn.Module, loader, device, precision: str = "fp32") -> dict:
    """Mean cross-entropy and accuracy of ``model`` over ``loader``.

    Runs in eval mode (dropout off) without autograd, and puts the model back in the mode
    it was in. The sums stay on the device until the end (one read, not one per batch).
    Returns ``{"loss": float, "accuracy": float in [0, 1], "correct": int, "count": int}``.
    """
    device = torch.device(device)
    total_loss = torch.zeros((), dtype=accumulator_dtype(device), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    with eval_mode(model):
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with autocast(device, precision):
                logits = model(images)
            total_loss += nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
            count += len(labels)
    if count == 0:
        raise ValueError("evaluate got an empty loader")
    hits = int(correct.item())
    return {"loss": total_loss.item() / count, "accuracy": hits / count, "correct": hits, "count": count}
