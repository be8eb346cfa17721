"""A whole run around the loop: set-up, epochs, the best epoch, checkpoints, resuming
(chapters "Training", "Saving and loading" and "More than one process").

The loop itself is :func:`alexnet_tutorial.training.train_steps`. Everything here happens
before it (device, precision, optimizer, processes, compilation: :func:`set_up`), between its
calls (progress, checkpoints: :func:`run_epoch`) or after an epoch (evaluation, history, best
epoch: :func:`end_epoch`). :func:`train` does it all from a config.
"""

from __future__ import annotations

import copy
import math
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed, runfiles
from .config import TrainConfig, describe_recipe, require_resolved, resolve_recipe, resume_config
from .devices import (
    cudnn_autotune,
    describe_device,
    memory_of,
    pick_channels_last,
    pick_device,
    pick_precision,
    precision_note,
    synchronize,
)
from .errors import ConfigError, UserError
from .loaders import build_loaders, epoch_batches
from .model import AlexNet, parameter_count
from .training import RunningLoss, WeightAverage, evaluate, learning_rate, make_optimizer, train_steps

LOG_EVERY = 20  # steps between reads of the running loss (a read waits for the GPU)


class Diverged(UserError):
    """The training loss stopped being a finite number: the learning rate is too high."""


@dataclass
class RunState:
    """Where a run stands: its position, its history and its best epoch so far. A checkpoint
    stores it and a resume restores it (chapter "Saving and loading")."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # ties a run's .best file to it
    epoch: int = 0               # finished epochs
    step: int = 0                # steps done in the epoch under way
    history: list = field(default_factory=list)
    loss_sum: float = 0.0        # training loss summed over the images of the epoch under way
    count: int = 0               # images of the epoch under way
    best_epoch: int = 0          # 1-based; 0: none yet
    best_accuracy: float = -1.0

    def record_epoch(self, record: dict) -> bool:
        """Add a finished epoch's record and move on to the next epoch; True when it is the
        best so far. Of equal accuracies the earlier epoch stays the best."""
        self.history.append(record)
        self.epoch, self.step, self.loss_sum, self.count = self.epoch + 1, 0, 0.0, 0
        if record["test_accuracy"] > self.best_accuracy:
            self.best_epoch, self.best_accuracy = record["epoch"], record["test_accuracy"]
            return True
        return False

    def fields(self) -> dict:
        """The keyword arguments of :func:`alexnet_tutorial.checkpoint.training_state`."""
        return {"epoch": self.epoch, "step": self.step, "history": self.history, "run_id": self.run_id,
                "running": {"loss_sum": self.loss_sum, "count": self.count},
                "best": {"epoch": self.best_epoch, "accuracy": self.best_accuracy}}

    @classmethod
    def from_checkpoint(cls, state: dict) -> RunState:
        best = state.get("best") or ckpt.best_from_history(state["history"])
        loss_sum, count = distributed.resumed_running(state["running"])
        return cls(run_id=state.get("run_id") or uuid.uuid4().hex, epoch=state["epoch"], step=state["step"],
                   history=[dict(h) for h in state["history"]], loss_sum=loss_sum, count=count,
                   best_epoch=best["epoch"], best_accuracy=best["accuracy"])


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained network and how it got there."""

    model: nn.Module            # the network after the last epoch, as evaluated (with an average: the average's)
    history: list[dict]         # per epoch: epoch, train_loss, test_loss, test_accuracy, seconds, images_per_s
    best_state: dict | None     # state_dict of the epoch with the best test accuracy (None: not at hand)
    best_epoch: int             # 1-based
    best_accuracy: float
    precision: str
    device: str
    compile_seconds: float | None = None  # with compile: how long the first step (compilation) took
    config: TrainConfig | None = None     # the run's settings, automatic ones resolved (resolve_recipe)

    def best_model(self) -> nn.Module:
        """A copy of the network with the best epoch's weights."""
        if self.best_state is None:
            raise ValueError(f"the weights of the best epoch ({self.best_epoch}) are not at hand: its .best "
                             "checkpoint was missing or from another run when this run was resumed")
        best = copy.deepcopy(self.model)
        best.load_state_dict(self.best_state)
        return best


@dataclass
class Setup:
    """What the loop needs, resolved for this machine before it starts (:func:`set_up`)."""

    device: torch.device
    precision: str               # fp32, bf16 or fp16, resolved from cfg.precision
    channels_last: bool
    net: nn.Module               # what the loop trains: the model, wrapped for several processes, compiled
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    lr_at: object                # step -> learning rate (training.learning_rate for this run)
    steps_per_epoch: int
    average: WeightAverage | None = None  # the weights' moving average, when the recipe keeps one
    compile_seconds: float | None = None


def check_dropout(model: nn.Module, cfg: TrainConfig) -> None:
    """Refuse a model built by hand whose dropout differs from the run's: the checkpoint would
    record one recipe and the network would have trained with another."""
    found = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
    if found and found != {cfg.dropout}:
        raise ConfigError(f"the model's dropout is {', '.join(f'{p:g}' for p in sorted(found))} but the config's "
                          f"is {cfg.dropout:g}: build it with AlexNet(dropout=cfg.dropout), or set the config's")


def set_up(model: nn.Module, cfg: TrainConfig, device, steps_per_epoch: int) -> Setup:
    """Device, precision, layout, optimizer, gradient scaler, loss, schedule and the weights' average
    for ``cfg``; under torchrun the model is wrapped for several processes, with ``compile`` compiled."""
    precision = pick_precision(cfg.precision, device)
    channels_last = pick_channels_last(cfg.channels_last, device)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    net = distributed.wrap(model, device)  # DistributedDataParallel in several processes, else model
    if cfg.compile:
        net = torch.compile(net, mode="reduce-overhead" if device.type == "cuda" else None)
    total = cfg.epochs * steps_per_epoch
    return Setup(device=device, precision=precision, channels_last=channels_last, net=net,
                 optimizer=make_optimizer(model, cfg, device),
                 scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
                 loss_fn=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
                 lr_at=partial(learning_rate, cfg=cfg, total_steps=total), steps_per_epoch=steps_per_epoch,
                 average=WeightAverage(model, cfg.average) if cfg.average else None)


def steps_to_pause(run: RunState, cfg: TrainConfig, steps_per_epoch: int, first: bool) -> int:
    """How many steps the loop takes before the run looks at it again: to the next read of the
    running loss (:data:`LOG_EVERY`), the next checkpoint, or the epoch's end; 1 for the first
    step of a compiled run (it is timed alone)."""
    if first:
        return 1
    done = run.epoch * steps_per_epoch + run.step
    to_save = cfg.checkpoint_every - done % cfg.checkpoint_every if cfg.checkpoint_every else math.inf
    return int(min(LOG_EVERY, to_save, steps_per_epoch - run.step))


def check_finite(run: RunState, setup: Setup, checkpoint) -> None:
    """Stop a run whose training loss is no longer a number, before it writes a checkpoint."""
    if math.isfinite(run.loss_sum):
        return
    done = run.epoch * setup.steps_per_epoch + run.step
    kept = f"the last good checkpoint stays in {checkpoint}" if checkpoint and Path(checkpoint).exists() else ""
    raise Diverged(f"training diverged: the loss is not finite by step {done:,} (epoch {run.epoch + 1}, learning "
                   f"rate {setup.lr_at(done - 1):g}); {kept or 'no checkpoint was written'}; try a lower --lr")


def run_epoch(setup: Setup, loader, cfg: TrainConfig, run: RunState, save, progress: bool) -> tuple[float, int]:
    """Train the rest of epoch ``run.epoch`` (from ``run.step``) in calls of :func:`train_steps`
    a few steps long; between them read the running loss, check it, and call ``save()`` when a
    checkpoint is due. Returns the seconds it took and the images it trained."""
    steps = setup.steps_per_epoch
    bar = tqdm(epoch_batches(loader, cfg.seed, run.epoch, run.step), total=steps, initial=run.step,
               desc=f"epoch {run.epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
    batches = iter(bar)  # one iterator, sliced a few steps at a time
    running, before = RunningLoss(setup.device, run.loss_sum, run.count), run.count
    synchronize(setup.device)
    started = time.perf_counter()
    while run.step < steps:
        first = cfg.compile and setup.compile_seconds is None
        done = run.epoch * steps + run.step
        n = train_steps(setup.net, islice(batches, steps_to_pause(run, cfg, steps, first)), setup.optimizer,
                        setup.loss_fn, setup.lr_at, done, running, device=setup.device, precision=setup.precision,
                        scaler=setup.scaler, channels_last=setup.channels_last, average=setup.average) - done
        if n == 0:
            raise RuntimeError(f"the loader gave fewer batches than its length ({steps})")
        run.step, run.loss_sum, run.count = run.step + n, running.sum.item(), running.count
        if first:
            setup.compile_seconds = time.perf_counter() - started
        check_finite(run, setup, save.path)
        bar.set_postfix(loss=f"{run.loss_sum / max(run.count, 1):.4f}", refresh=False)
        if cfg.checkpoint_every and (done + n) % cfg.checkpoint_every == 0 and run.step < steps:
            save()
    bar.close()
    synchronize(setup.device)
    return time.perf_counter() - started, run.count - before


def end_epoch(model, test_loader, cfg: TrainConfig, run: RunState, setup: Setup, seconds: float, seen: int,
              log=print) -> bool:
    """Evaluate ``model`` after an epoch, record it in ``run`` and log it; True when it is the best
    epoch so far. Images/s counts the images trained (all processes) since the epoch (re)started."""
    run.loss_sum, run.count, seen = distributed.all_sum(run.loss_sum, run.count, seen)
    result = evaluate(model, test_loader, setup.device, setup.precision)
    loss_sum, correct, count = distributed.all_sum(result["loss"] * result["count"], result["correct"],
                                                   result["count"])  # each process evaluated a shard
    record = {"epoch": run.epoch + 1, "train_loss": run.loss_sum / max(run.count, 1),
              "test_loss": loss_sum / count, "test_accuracy": correct / count,
              "seconds": seconds, "images_per_s": seen / seconds if seconds > 0 else 0.0}
    is_best = run.record_epoch(record)
    log(f"epoch {run.epoch}/{cfg.epochs}  train loss {record['train_loss']:.4f}  "
        f"test loss {record['test_loss']:.4f}  test accuracy {100 * record['test_accuracy']:.2f}%  "
        f"{seconds:.1f} s ({record['images_per_s']:,.0f} images/s)")
    return is_best


class Saver:
    """Writes the run's checkpoints into ``path`` (nothing when it is None): the running loss
    summed over all processes, then rank 0 writes, the ``.best`` file first."""

    def __init__(self, path, model, setup: Setup, cfg: TrainConfig, run: RunState):
        self.path, self.model, self.setup, self.cfg, self.run = path, model, setup, cfg, run

    def __call__(self, is_best: bool = False) -> None:
        if self.path is None:
            return
        loss_sum, count = distributed.all_sum(self.run.loss_sum, self.run.count)
        if not distributed.is_main():
            return
        where = {"device": self.setup.device.type, "precision": self.setup.precision}
        fields = {**self.run.fields(), "running": {"loss_sum": loss_sum, "count": count}}
        state = ckpt.training_state(self.model, self.setup.optimizer, self.setup.scaler, self.cfg,
                                    **fields, **where, average=self.setup.average)
        runfiles.write_run(state, self.path, is_best)


def fit(model: nn.Module, train_loader, test_loader, cfg: TrainConfig, *, device=None, checkpoint_path=None,
        resume: dict | None = None, resume_path=None, progress: bool = True, log=print,
        given: TrainConfig | None = None) -> FitResult:
    """Train ``model`` for ``cfg.epochs`` epochs, evaluating on ``test_loader`` after each.

    ``cfg`` must be resolved (``cfg.resolved(train_size)``; ``given``: the settings as first
    given, for the log's recipe line). With ``checkpoint_path`` a checkpoint is written
    atomically at every epoch end (and every ``cfg.checkpoint_every`` steps), the best epoch's
    beside it. ``resume`` is a loaded checkpoint to continue from (read from ``resume_path``):
    on the same device type and precision the run ends bit-identical to one never interrupted.
    """
    require_resolved(cfg, "fit")
    check_dropout(model, cfg)
    device = distributed.setup(torch.device(device) if device is not None else pick_device(cfg.device))
    log, progress = distributed.on_main_only(log, progress)
    setup = set_up(model, cfg, device, len(train_loader))
    run, best_state = (restore(resume, model, setup, cfg, resume_path, checkpoint_path, log) if resume is not None
                       else (RunState(), None))
    log_start(setup, cfg, given or cfg, len(train_loader.dataset), log)
    evaluated = setup.average.module if setup.average else model  # what the run evaluates and hands out
    save = Saver(checkpoint_path, model, setup, cfg, run)
    with cudnn_autotune(device):
        while run.epoch < cfg.epochs:
            seconds, seen = run_epoch(setup, train_loader, cfg, run, save, progress)
            if setup.compile_seconds is not None and run.epoch == 0:
                log(f"torch.compile: the first step (compiling) took {setup.compile_seconds:.1f} s")
            is_best = end_epoch(evaluated, test_loader, cfg, run, setup, seconds, seen, log)
            if is_best:
                best_state = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
            save(is_best=is_best)
    return FitResult(model=evaluated, history=run.history, best_state=best_state,
                     best_epoch=run.best_epoch, best_accuracy=run.best_accuracy, precision=setup.precision,
                     device=str(device), compile_seconds=setup.compile_seconds, config=cfg)


def log_start(setup: Setup, cfg: TrainConfig, given: TrainConfig, train_size: int, log) -> None:
    """The first lines of a run's log: processes, device, precision and layout, the recipe."""
    if split := distributed.describe(cfg.batch_size):  # under torchrun: how the global batch is split
        log(split)
    log(f"training on {describe_device(setup.device)}")
    log(f"precision {setup.precision}, {'channels_last' if setup.channels_last else 'contiguous'} layout, "
        f"{train_size:,} images, batch {cfg.batch_size}, {setup.steps_per_epoch} steps per epoch, "
        f"{cfg.epochs} epochs")
    log(describe_recipe(given, cfg, train_size))
    if note := precision_note(setup.precision, setup.device):
        log(note)


def restore(state: dict, model, setup: Setup, cfg: TrainConfig, resume_path, checkpoint_path, log):
    """Put a checkpoint's run back (``restore_training``); returns it and its best weights, or None."""
    ckpt.restore_training(state, model, setup.optimizer, setup.scaler, setup.average, resume_path)
    run = RunState.from_checkpoint(state)
    best_state = runfiles.restore_best(state, run, resume_path or checkpoint_path, checkpoint_path, log)
    log(f"resuming after epoch {run.epoch}, step {run.step} (best so far: "
        + (f"epoch {run.best_epoch}, {100 * run.best_accuracy:.2f}%)" if run.best_epoch else "none yet)"))
    saved_epochs = state["config"].get("epochs", cfg.epochs)
    if saved_epochs != cfg.epochs:
        log(f"note: the run was started for {saved_epochs} epochs and now runs to {cfg.epochs}: the learning-rate "
            f"schedule spans {cfg.epochs} epochs from here on, so the result differs from a run of either length")
    saved = {"device": state.get("device"), "precision": state.get("precision")}
    if all(saved.values()) and saved != {"device": setup.device.type, "precision": setup.precision}:
        log(f"note: saved on {saved['device']} in {saved['precision']}, resumed on {setup.device.type} in "
            f"{setup.precision}: the run goes on, but its last bits may differ from an uninterrupted one")
    return run, best_state


def check_fits(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse, before allocating anything, a network too wide to train in ``device``'s memory:
    weights, gradients, momentum and a checkpoint's copy, 4 bytes each per parameter."""
    params = parameter_count(cfg.width_mult)
    need, have = 16 * params, memory_of(device)
    if have is not None and need > have:
        raise ConfigError(f"width_mult {cfg.width_mult:g} gives {params:,} parameters, about {need / 2**30:.1f} GiB "
                          f"to train; this {device.type} has {have / 2**30:.1f} GiB: choose a smaller --width-mult")


def train(cfg: TrainConfig | dict | None = None, *, out=None, resume=None, force: bool = False,
          progress: bool = True, log=print) -> FitResult:
    """Everything in one call: data, a seeded model, :func:`fit`, checkpoints.

    ``out`` is the checkpoint to write (its best epoch goes beside it); a file of another run
    is never overwritten unless ``force=True``. ``resume`` is a checkpoint path to continue;
    with it, ``cfg`` (a config, or a dict of only the settings to change) may change only the
    settings in :data:`~alexnet_tutorial.config.RESUMABLE`, and ``out`` defaults to ``resume``.
    """
    resume = distributed.resume_after_restart(out, resume, log)  # torchrun restarted the job
    state = runfiles.load_for_resume(resume) if resume is not None else None
    if state is not None:
        cfg = resume_config(state["config"], cfg, resume)
    given = cfg if isinstance(cfg, TrainConfig) else TrainConfig(**(cfg or {}))
    cfg = distributed.check_config(resolve_recipe(given), resume)  # the world size: recorded or checked
    out = Path(out) if out is not None else (Path(resume) if resume is not None else None)
    device = distributed.setup(pick_device(cfg.device))
    pick_precision(cfg.precision, device)  # fail before loading data
    check_fits(cfg, device)
    with runfiles.claim(out, state, resume, force):
        torch.manual_seed(cfg.seed)
        model = AlexNet(width_mult=cfg.width_mult, dropout=cfg.dropout)
        if state is not None:
            ckpt.load_weights(model, state, resume, training=True)  # fails here, naming the file, if they do not fit
        train_loader, test_loader = build_loaders(cfg, device)
        return fit(model, train_loader, test_loader, cfg, device=device, checkpoint_path=out, resume=state,
                   given=given, resume_path=resume, progress=progress, log=log)

