"""Settings, the training loop and evaluation (chapter "Training").

Training and evaluation are plain functions with explicit arguments: ``evaluate`` gets the
model it evaluates (the original's ``validate`` read a global ``net`` instead). ``fit`` is a
short loop over small named steps: :func:`run_epoch`, :func:`end_epoch`, and the checkpoint
writes in ``fit`` itself.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed
from .data import MNIST_TRAIN_CLASS_COUNTS, TensorLoader, epoch_seed, make_loaders, mnist_tensors
from .devices import (
    DEVICES,
    PRECISIONS,
    accumulator_dtype,
    autocast,
    describe_device,
    pick_channels_last,
    pick_device,
    pick_precision,
    precision_note,
    synchronize,
)
from .model import AlexNet

LOADERS = ("tensor", "torchvision")
SCHEDULES = ("onecycle", "constant")
MAX_SEED = 2**32 - 1
LOG_EVERY = 20  # steps between reads of the running loss (a read waits for the GPU)


@dataclass
class TrainConfig:
    """Every setting of a run; the notebooks, the command line and the tests build this."""

    epochs: int = 5                # passes over the training set
    # None below: follows the run's length, by the rule in resolve_recipe (printed in the log).
    batch_size: int | None = None  # images per optimizer step (all processes together under torchrun)
    lr: float | None = None        # peak SGD learning rate (reached after warm-up)
    momentum: float = 0.9          # SGD (Nesterov) momentum
    weight_decay: float = 5e-4     # L2 penalty on conv and linear weights (not biases)
    schedule: str = "onecycle"     # "onecycle": linear warm-up, then linear decay to 0; or "constant"
    warmup: float = 0.15           # fraction of all steps spent warming up (onecycle only)
    label_smoothing: float | None = None  # target share spread over all 10 classes: 0.1 gives 0.91 true, 0.01 others
    shift: int | None = None       # random translation of training images, in pixels (0: none)
    dropout: float | None = None   # drop probability before fc1 and fc2
    width_mult: float = 1.0        # scales every channel and hidden width
    seed: int = 0                  # 0 .. 2**32-1; weights, data order, shifts and dropout all follow it
    device: str = "auto"           # "auto": CUDA, else MPS, else CPU
    precision: str = "auto"        # "auto": bf16/fp16 where the hardware runs it natively
    channels_last: bool | None = None  # NHWC memory layout; None: where measured faster (CUDA, bf16 CPUs)
    compile: bool = False          # torch.compile the model (CUDA graphs on CUDA); drops a short last batch
    loader: str = "tensor"         # "tensor": whole set on the device; "torchvision": per-item
    data_dir: str | None = None    # MNIST root; None: $ALEXNET_TUTORIAL_DATA or the default
    subset: int | None = None      # train on the first N training images only (quick runs)
    stratified: bool = False       # with subset: the same number of images of every digit
    eval_batch_size: int = 1000    # images per batch when evaluating
    checkpoint_every: int = 0      # also checkpoint every N optimizer steps (0: epoch ends only)
    world_size: int = 1            # processes training together (set from torchrun; see distributed.py)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for a setting out of range."""
        def need(ok, msg):
            if not ok:
                raise ValueError(msg)
        need(isinstance(self.epochs, int) and self.epochs >= 1, f"epochs must be a positive integer, got {self.epochs}")
        need(self.batch_size is None or isinstance(self.batch_size, int) and self.batch_size >= 1,
             f"batch size must be a positive integer, got {self.batch_size}")
        need(isinstance(self.eval_batch_size, int) and self.eval_batch_size >= 1,
             f"eval batch size must be positive, got {self.eval_batch_size}")
        need(self.lr is None or math.isfinite(self.lr) and self.lr > 0,
             f"learning rate must be positive, got {self.lr}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"weight decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.warmup < 1, f"warmup must be a fraction in [0, 1), got {self.warmup}")
        need(self.label_smoothing is None or 0 <= self.label_smoothing < 1,
             f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        need(self.shift is None or isinstance(self.shift, int) and 0 <= self.shift <= 8,
             f"shift must be 0..8 pixels, got {self.shift}")
        need(self.dropout is None or 0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        need(math.isfinite(self.width_mult) and self.width_mult > 0,
             f"width_mult must be positive, got {self.width_mult}")
        need(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        need(self.loader in LOADERS, f"loader must be one of {', '.join(LOADERS)}, got {self.loader!r}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        need(self.subset is None or (isinstance(self.subset, int) and 1 <= self.subset <= 60_000),
             f"subset must be between 1 and 60000 images, got {self.subset}")
        need(isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 0,
             f"checkpoint_every must be >= 0 steps, got {self.checkpoint_every}")
        need(isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED,
             f"seed must be a whole number from 0 to {MAX_SEED}, got {self.seed}")
        most = len(MNIST_TRAIN_CLASS_COUNTS) * min(MNIST_TRAIN_CLASS_COUNTS)
        need(not (self.stratified and self.subset and self.subset > most),
             f"a stratified subset can have at most {most} images (digit 5 has only "
             f"{min(MNIST_TRAIN_CLASS_COUNTS)} training images), got {self.subset}")
        need(self.channels_last is None or isinstance(self.channels_last, bool),
             f"channels_last must be None, True or False, got {self.channels_last!r}")
        need(isinstance(self.compile, bool), f"compile must be True or False, got {self.compile!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved(self, train_size: int | None = None) -> TrainConfig:
        """A copy with every automatic (None) setting chosen by :func:`resolve_recipe`."""
        return resolve_recipe(self, train_size)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a dict, ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


# The original write-up's recipe (with its bugs fixed elsewhere): the errata and the
# speed benchmark compare against it.
ORIGINAL_RECIPE = dict(batch_size=64, lr=0.01, momentum=0.9, weight_decay=0.0, schedule="constant",
                       label_smoothing=0.0, shift=0, dropout=0.5, precision="fp32", channels_last=False,
                       loader="torchvision")

# The automatic recipe (resolve_recipe). Its full strength is tuned for the default full run,
# 5 epochs of 60,000 images; benchmarks/recipe.py measures it at other lengths.
AUTO_FIELDS = ("batch_size", "lr", "dropout", "label_smoothing", "shift")
FULL_RUN_IMAGES = 5 * 60_000  # training images a full run sees: regularisation at full strength
BASE_BATCH, BASE_LR = 128, 0.05  # the full run's batch and peak learning rate
# A short run takes smaller batches (down to 32) to get at least this many steps, and with them a
# lower peak lr. One epoch of 60,000 at batch 128 (469 steps, peak 0.05) ended near 98.7%; at
# batch 64 (938 steps, 0.025) above 99.0% (benchmarks/results/recipe-sweep-60000x1.txt).
MIN_STEPS = 900
FULL_DROPOUT, FULL_SMOOTHING, FULL_SHIFT = 0.5, 0.1, 2


def recipe_lr(batch_size: int) -> float:
    """The peak learning rate for ``batch_size``: ``BASE_LR`` at ``BASE_BATCH`` and above, in
    proportion to the batch below it (the linear scaling rule). Not more above it: at batch
    1,024 the square root's 0.141 barely learned for three of 16 epochs and ended below 0.05
    (99.33% against 99.40%), and the linear rule's 0.4 did worse still; this network has no
    batch norm (seed 0, benchmarks/results/recipe-batch1024-lr.txt)."""
    return BASE_LR * min(1.0, batch_size / BASE_BATCH)


def resolve_recipe(cfg: TrainConfig, train_size: int | None = None) -> TrainConfig:
    """``cfg`` with each automatic (None) setting of :data:`AUTO_FIELDS` filled in for the
    run's length; settings given explicitly are kept. ``train_size`` is the number of
    training images (default: ``cfg.subset`` or 60,000).

    - batch: 128, or the largest of 64 and 32 that still gives :data:`MIN_STEPS` steps
      (32 when none does): a short run learns from steps, not from images per step;
    - peak learning rate: :func:`recipe_lr` of the batch;
    - dropout, label smoothing and random shifts: full strength (0.5, 0.1, 2 px) for a run
      that sees 300,000 training images or more, in proportion below (a 1-epoch run of
      60,000 images gets a fifth: 0.1, 0.02, 0 px). Regularisation pays off only on long runs:
      on a short one it keeps the network from learning at all.
    """
    size = train_size if train_size is not None else (cfg.subset or 60_000)
    images = size * cfg.epochs
    values = {}
    batch = cfg.batch_size
    if batch is None:
        batch = next((b for b in (BASE_BATCH, 64, 32) if images // b >= MIN_STEPS), 32)
        values["batch_size"] = batch
    if cfg.lr is None:
        values["lr"] = round(recipe_lr(batch), 6)
    strength = min(1.0, images / FULL_RUN_IMAGES)
    if cfg.dropout is None:
        values["dropout"] = round(FULL_DROPOUT * strength, 2)
    if cfg.label_smoothing is None:
        values["label_smoothing"] = round(FULL_SMOOTHING * strength, 3)
    if cfg.shift is None:
        values["shift"] = round(FULL_SHIFT * strength)
    return replace(cfg, **values)


def describe_recipe(cfg: TrainConfig, resolved: TrainConfig, train_size: int) -> str:
    """The log's ``recipe:`` line: the recipe of the run, and which settings the run's length
    chose; under it, on a line of its own, :func:`few_steps_note` when it has something to say."""
    auto = [name for name in AUTO_FIELDS if getattr(cfg, name) is None]
    images = train_size * resolved.epochs
    text = (f"recipe: batch {resolved.batch_size}, peak lr {resolved.lr:g}, dropout {resolved.dropout:g}, "
            f"label smoothing {resolved.label_smoothing:g}, shift {resolved.shift} px")
    if auto:
        text += (f" ({', '.join(name.replace('_', ' ') for name in auto)} chosen for "
                 f"{resolved.epochs} x {train_size:,} = {images:,} training images)")
    note = few_steps_note(cfg, resolved, train_size)
    return f"{text}\n{note}" if note else text


def few_steps_note(cfg: TrainConfig, resolved: TrainConfig, train_size: int) -> str | None:
    """A log line when a batch given by hand leaves the run fewer than :data:`MIN_STEPS` steps
    where the automatic batch would give it more; None otherwise. Batch 1,024 for 5 epochs
    (295 steps) ended at 90.8% against 99.5% at batch 128 (benchmarks/results/recipe-sweep-batch1024.txt):
    this network learns from the number of steps, and a large batch needs more epochs."""
    if cfg.batch_size is None:
        return None
    per_epoch = math.ceil(train_size / resolved.batch_size)
    steps = resolved.epochs * per_epoch
    auto = resolve_recipe(replace(cfg, batch_size=None), train_size).batch_size
    if steps >= MIN_STEPS or resolved.batch_size <= auto:
        return None
    return (f"note: batch {resolved.batch_size} gives {steps:,} steps in all; runs of fewer than {MIN_STEPS} steps "
            f"ended below the automatic batch ({auto}) in benchmarks/README.md; "
            f"{math.ceil(MIN_STEPS / per_epoch)} epochs give this batch {MIN_STEPS} or more")


# What a resumed run may change: where and how it runs, how long, how often it saves. Every
# other setting is part of the recipe and stays the run's own.
RESUMABLE = ("epochs", "device", "precision", "channels_last", "compile", "data_dir", "checkpoint_every",
             "eval_batch_size")


class ResumeMismatch(ValueError):
    """A setting given for a resumed run differs from the one the run was started with."""

    def __init__(self, name: str, given, saved, path):
        self.name, self.given, self.saved = name, given, saved
        super().__init__(f"{name}={given!r} differs from the run's {name}={saved!r} in {path}; a resumed run "
                         f"keeps its recipe (only {', '.join(RESUMABLE)} may change)")


def resume_config(saved: dict, cfg: TrainConfig | None, path="checkpoint") -> TrainConfig:
    """The settings of a resumed run: the checkpoint's ``saved`` ones, with the fields of
    :data:`RESUMABLE` taken from ``cfg``. Any other field of ``cfg`` must agree with the
    checkpoint's, or :class:`ResumeMismatch` names it."""
    base = TrainConfig.from_dict(saved)
    if cfg is None:
        return base
    for f in fields(TrainConfig):
        if f.name in RESUMABLE or f.name == "world_size":  # the world size is checked by distributed.py
            continue
        if f.name in AUTO_FIELDS and getattr(cfg, f.name) is None:  # automatic: the run's own choice
            continue
        if getattr(cfg, f.name) != getattr(base, f.name):
            raise ResumeMismatch(f.name, getattr(cfg, f.name), getattr(base, f.name), path)
    changes = {name: getattr(cfg, name) for name in RESUMABLE}
    if cfg.data_dir is None:  # not given: the data stays where the run found it
        changes["data_dir"] = base.data_dir
    changes["world_size"] = base.world_size
    return replace(base, **changes)


def make_optimizer(model: nn.Module, cfg: TrainConfig, device=None) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; weight decay on weights only, not on biases. On CUDA the
    update of all parameters runs as one fused kernel. An automatic learning rate is
    resolved as :func:`resolve_recipe` does."""
    cfg = resolve_recipe(cfg)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device is not None and torch.device(device).type == "cuda"
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                           **({"fused": True} if fused else {}))


def make_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Per-step learning-rate factor: onecycle warms up linearly from 0 to ``lr`` over the
    first ``warmup`` of all steps, then decays linearly to 0; constant keeps ``lr``."""
    total = cfg.epochs * steps_per_epoch
    warm = max(1, round(cfg.warmup * total))

    def factor(step: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device, precision: str = "fp32") -> dict:
    """Mean cross-entropy and accuracy of ``model`` over ``loader``.

    Runs in eval mode (dropout off) without autograd, and puts the model back in the mode
    it was in. The sums stay on the device until the end (one read, not one per batch).
    Returns ``{"loss": float, "accuracy": float in [0, 1], "count": int}``.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=accumulator_dtype(device), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    try:
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with autocast(device, precision):
                logits = model(images)
            total_loss += nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
            count += len(labels)
    finally:
        model.train(was_training)
    total, hits, count = distributed.all_sum(total_loss.item(), correct.item(), count)  # sharded evaluation
    if count == 0:
        raise ValueError("evaluate got an empty loader")
    return {"loss": total / count, "accuracy": hits / count, "count": count}


def train_step(model: nn.Module, images, labels, optimizer, scheduler, scaler, loss_fn, device,
               precision: str = "fp32", channels_last: bool = False) -> torch.Tensor:
    """One optimizer step on one batch; returns the batch's mean loss as a tensor on the
    device (reading it as a number would make the CPU wait for the GPU at every step).

    Moves the batch to ``device``, runs the model under autocast, clears the old gradients,
    backpropagates (through the gradient scaler, a no-op unless fp16: it skips a step whose
    gradients overflowed), steps the optimizer and the learning-rate schedule.
    """
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        loss = loss_fn(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss.detach()


def _start_epoch(loader, seed: int, epoch: int, start_step: int):
    """Make ``loader`` replay epoch ``epoch`` from ``start_step``; returns the batch iterator."""
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


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained network and how it got there."""

    model: nn.Module            # the network after the last epoch
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

    def fields(self) -> dict:
        """The keyword arguments of :func:`alexnet_tutorial.checkpoint.training_state`."""
        return {"epoch": self.epoch, "step": self.step, "history": self.history, "run_id": self.run_id,
                "running": {"loss_sum": self.loss_sum, "count": self.count},
                "best": {"epoch": self.best_epoch, "accuracy": self.best_accuracy}}

    @classmethod
    def from_checkpoint(cls, state: dict) -> RunState:
        best = state.get("best") or ckpt.best_from_history(state["history"])
        return cls(run_id=state.get("run_id") or uuid.uuid4().hex, epoch=state["epoch"], step=state["step"],
                   history=[dict(h) for h in state["history"]], loss_sum=state["running"]["loss_sum"],
                   count=state["running"]["count"], best_epoch=best["epoch"], best_accuracy=best["accuracy"])


@contextlib.contextmanager
def _cudnn_autotune(device: torch.device):
    """On CUDA let cuDNN time its convolution algorithms once per shape and keep the fastest;
    the global flag is put back afterwards."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def fit(model: nn.Module, train_loader, test_loader, cfg: TrainConfig, *, device=None,
        checkpoint_path=None, resume: dict | None = None, resume_path=None, progress: bool = True,
        log=print, given: TrainConfig | None = None) -> FitResult:
    """Train ``model`` for ``cfg.epochs`` epochs, evaluating on ``test_loader`` after each.

    With ``checkpoint_path`` a checkpoint is written atomically at every epoch end (and every
    ``cfg.checkpoint_every`` steps), and the best epoch's is kept beside it (see
    :func:`alexnet_tutorial.checkpoint.best_path`). ``resume`` is a loaded checkpoint to
    continue from (read from ``resume_path``, by default ``checkpoint_path``): on the same
    device type and precision the run then ends bit-identical to one never interrupted.
    Automatic (None) settings of ``cfg`` are chosen by :func:`resolve_recipe` for the training
    set's size; the log names them (``given``: the settings as first given, when ``cfg`` has
    already been resolved).
    """
    device = torch.device(device) if device is not None else pick_device(cfg.device)
    device = distributed.setup(device)  # under torchrun: join the process group
    log, progress = distributed.on_main_only(log, progress)
    asked, train_size = given or cfg, len(train_loader.dataset)
    cfg = resolve_recipe(cfg, train_size)
    dropouts = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
    if len(dropouts) == 1 and cfg.dropout not in dropouts:  # the model was built by hand: record its own
        cfg = replace(cfg, dropout=dropouts.pop())
    precision = pick_precision(cfg.precision, device)
    channels_last = pick_channels_last(cfg.channels_last, device, precision)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    steps_per_epoch = len(train_loader)
    optimizer = make_optimizer(model, cfg, device)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    net = distributed.wrap(model, device)  # DistributedDataParallel in several processes, else model
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    where = {"device": device.type, "precision": precision}

    run, best_state = RunState(), None
    if resume is not None:
        ckpt.restore_training(resume, model, optimizer, scheduler, scaler)
        run = RunState.from_checkpoint(resume)
        run.loss_sum, run.count = distributed.resumed_running(resume["running"])
        best_state = _restore_best(resume, run, resume_path or checkpoint_path, checkpoint_path, log)
        _log_resume(resume, run, cfg, where, log)

    def save(is_best: bool = False):
        if checkpoint_path is None:
            return
        loss_sum, count = distributed.all_sum(run.loss_sum, run.count)  # over all processes; rank 0 writes
        if not distributed.is_main():
            return
        fields = {**run.fields(), "running": {"loss_sum": loss_sum, "count": count}}
        state = ckpt.training_state(model, optimizer, scheduler, scaler, cfg, **fields, **where)
        if is_best:  # the .best file first: a kill between the two writes then loses nothing
            ckpt.save_checkpoint(state, ckpt.best_path(checkpoint_path))
        ckpt.save_checkpoint(state, checkpoint_path)

    if split := distributed.describe(cfg.batch_size):  # under torchrun: how the global batch is split
        log(split)
    log(f"training on {describe_device(device)}")
    log(f"precision {precision}, {'channels_last' if channels_last else 'contiguous'} layout, "
        f"{len(train_loader.dataset):,} images, batch {cfg.batch_size}, {steps_per_epoch} steps per epoch, "
        f"{cfg.epochs} epochs")
    log(describe_recipe(asked, cfg, train_size))
    note = precision_note(precision, device)
    if note:
        log(note)
    step_model = net
    if cfg.compile:
        step_model = torch.compile(net, mode="reduce-overhead" if device.type == "cuda" else None)
    compile_seconds = None
    model.train()
    with _cudnn_autotune(device):
        while run.epoch < cfg.epochs:
            seconds, seen, first = run_epoch(step_model, train_loader, cfg, run, device, precision, channels_last,
                                             (optimizer, scheduler, scaler, loss_fn), save, progress)
            if cfg.compile and compile_seconds is None:
                compile_seconds = first
                log(f"torch.compile: the first step (compiling) took {first:.1f} s")
            run.loss_sum, run.count, seen = distributed.all_sum(run.loss_sum, run.count, seen)
            record = end_epoch(model, test_loader, cfg, run, device, precision, seconds, seen, log)
            is_best = record["test_accuracy"] > run.best_accuracy
            if is_best:
                run.best_epoch, run.best_accuracy = run.epoch, record["test_accuracy"]
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            save(is_best)
    return FitResult(model=model, history=run.history, best_state=best_state, best_epoch=run.best_epoch,
                     best_accuracy=run.best_accuracy, precision=precision, device=str(device),
                     compile_seconds=compile_seconds, config=cfg)


def run_epoch(model, loader, cfg: TrainConfig, run: RunState, device, precision, channels_last, parts, save,
              progress: bool = True):
    """The steps of one epoch (from ``run.step`` on, after a resume). The running loss stays
    on the device and is read only for the progress bar (every :data:`LOG_EVERY` steps) and
    for a checkpoint. Returns (seconds, images trained in this call, seconds of the first step)."""
    optimizer, scheduler, scaler, loss_fn = parts
    steps = len(loader)
    synchronize(device)
    started = time.perf_counter()
    first = None
    loss_sum = torch.tensor(run.loss_sum, dtype=accumulator_dtype(device), device=device)
    seen = 0
    batches = _start_epoch(loader, cfg.seed, run.epoch, run.step)
    bar = tqdm(batches, total=steps, initial=run.step, desc=f"epoch {run.epoch + 1}/{cfg.epochs}",
               disable=not progress, leave=False)
    for images, labels in bar:
        loss = train_step(model, images, labels, optimizer, scheduler, scaler, loss_fn, device, precision,
                          channels_last)
        loss_sum += loss * len(labels)
        run.count += len(labels)
        run.step += 1
        seen += len(labels)
        if first is None:
            synchronize(device)
            first = time.perf_counter() - started
        if progress and run.step % LOG_EVERY == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / run.count:.4f}")
        global_step = run.epoch * steps + run.step
        if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0 and run.step < steps:
            run.loss_sum = loss_sum.item()
            save()
    bar.close()
    synchronize(device)
    run.loss_sum = loss_sum.item()
    return time.perf_counter() - started, seen, first


def end_epoch(model, test_loader, cfg: TrainConfig, run: RunState, device, precision, seconds: float, seen: int,
              log=print) -> dict:
    """Evaluate after an epoch, add its record to ``run.history``, log it and move ``run``
    on to the next epoch. Images/s counts the images trained since the epoch (re)started."""
    result = evaluate(model, test_loader, device, precision)
    record = {"epoch": run.epoch + 1, "train_loss": run.loss_sum / max(run.count, 1),
              "test_loss": result["loss"], "test_accuracy": result["accuracy"],
              "seconds": seconds, "images_per_s": seen / seconds if seconds > 0 else 0.0}
    run.history.append(record)
    run.epoch, run.step, run.loss_sum, run.count = run.epoch + 1, 0, 0.0, 0
    log(f"epoch {run.epoch}/{cfg.epochs}  train loss {record['train_loss']:.4f}  "
        f"test loss {record['test_loss']:.4f}  test accuracy {100 * record['test_accuracy']:.2f}%  "
        f"{seconds:.1f} s ({record['images_per_s']:,.0f} images/s)")
    return record


def _restore_best(state: dict, run: RunState, resume_path, checkpoint_path, log) -> dict | None:
    """The best epoch's weights for a resumed run; its epoch and accuracy stay on record even
    when the weights are nowhere to be had. When the run goes on into another file, that
    file's .best is written at once (and so is a missing or stale one beside the resumed file),
    so that every later checkpoint of the run can count on it."""
    found = ckpt.find_best(state, resume_path)
    if found is None:
        if run.best_epoch:
            where = ckpt.best_path(resume_path) if resume_path is not None else "a .best file"
            log(f"note: the weights of the best epoch so far (epoch {run.best_epoch}, "
                f"{100 * run.best_accuracy:.2f}%) are not in {where} (missing, or from another run); the epoch "
                "stays the best on record, and a .best file is written only when a later epoch beats it")
        return None
    if checkpoint_path is not None and distributed.is_main():
        target = ckpt.best_path(checkpoint_path)
        there = ckpt.load_checkpoint(target) if target.exists() else None
        if there is None or (there.get("run_id"), there["epoch"]) != (found.get("run_id"), found["epoch"]):
            ckpt.save_checkpoint(found, target)  # the .best file this run's checkpoint counts on
    return found["model"]


def _log_resume(state: dict, run: RunState, cfg: TrainConfig, where: dict, log) -> None:
    log(f"resuming after epoch {run.epoch}, step {run.step} (best so far: "
        + (f"epoch {run.best_epoch}, {100 * run.best_accuracy:.2f}%)" if run.best_epoch else "none yet)"))
    saved_epochs = state.get("config", {}).get("epochs", cfg.epochs)
    if saved_epochs != cfg.epochs:
        log(f"note: the run was started for {saved_epochs} epochs and now runs to {cfg.epochs}: the learning-rate "
            f"schedule spans {cfg.epochs} epochs from here on, so the result differs from a run of either length")
    saved = {k: state.get(k) for k in where}
    if all(saved.values()) and saved != where:
        log(f"note: saved on {saved['device']} in {saved['precision']}, resumed on {where['device']} in "
            f"{where['precision']}: the run goes on, but its last bits may differ from an uninterrupted one")


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


def train(cfg: TrainConfig | None = None, *, out=None, resume=None, force: bool = False,
          progress: bool = True, log=print) -> FitResult:
    """Everything in one call: data, a seeded model, :func:`fit`, checkpoints.

    ``out`` is the checkpoint to write (its best epoch goes beside it); an existing file is
    never overwritten unless ``force=True``. ``resume`` is a checkpoint path to continue; with
    it, ``cfg`` may change only the settings in :data:`RESUMABLE` (see :func:`resume_config`),
    and ``out`` defaults to ``resume`` (the run is written on in place).
    """
    resume = distributed.resume_after_restart(out, resume, log)  # torchrun restarted the job
    state = None
    if resume is not None:
        state = ckpt.load_checkpoint(resume)
        cfg = resume_config(state["config"], cfg, resume)
        if cfg.epochs < state["epoch"]:
            raise ValueError(f"the run in {resume} has already finished {state['epoch']} epochs; "
                             f"epochs must be at least {state['epoch']}, got {cfg.epochs}")
    given = cfg or TrainConfig()
    cfg = resolve_recipe(given)
    out = Path(out) if out is not None else (Path(resume) if resume is not None else None)
    same_file = resume is not None and out is not None and out.resolve() == Path(resume).resolve()
    if out is not None and not same_file:
        for path in (out, ckpt.best_path(out)):
            if path.exists() and not force:
                raise FileExistsError(f"{path} exists; pass --resume {out} to continue that run, "
                                      "--force to overwrite it, or choose another --out")
        ckpt.check_writable(out)
    cfg = distributed.check_config(cfg, resume)  # the world size: recorded, or checked on resume
    device = distributed.setup(pick_device(cfg.device))
    pick_precision(cfg.precision, device)  # fail before loading data
    torch.manual_seed(cfg.seed)
    model = AlexNet(width_mult=cfg.width_mult, dropout=cfg.dropout)
    if state is not None:
        ckpt.load_weights(model, state, resume)  # fails here, naming the file, if they do not fit
    train_loader, test_loader = build_loaders(cfg, device)
    return fit(model, train_loader, test_loader, cfg, device=device, checkpoint_path=out, resume=state, given=given,
               resume_path=resume, progress=progress, log=log)
