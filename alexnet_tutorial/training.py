"""Settings, the training loop and evaluation (chapter "Training").

Training and evaluation are plain functions with explicit arguments: ``evaluate`` gets the
model it evaluates (the original's ``validate`` read a global ``net`` instead).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed
from .data import TensorLoader, make_loaders, mnist_tensors
from .model import AlexNet

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
LOADERS = ("tensor", "torchvision")
SCHEDULES = ("onecycle", "constant")


@dataclass
class TrainConfig:
    """Every setting of a run; the notebooks, the command line and the tests build this."""

    epochs: int = 5                # passes over the training set
    batch_size: int = 128          # images per optimizer step (all processes together under torchrun)
    lr: float = 0.05               # peak SGD learning rate (reached after warm-up)
    momentum: float = 0.9          # SGD (Nesterov) momentum
    weight_decay: float = 5e-4     # L2 penalty on conv and linear weights (not biases)
    schedule: str = "onecycle"     # "onecycle": linear warm-up, then linear decay to 0; or "constant"
    warmup: float = 0.15           # fraction of all steps spent warming up (onecycle only)
    label_smoothing: float = 0.1   # target probability moved evenly onto the other classes
    shift: int = 2                 # random translation of training images, in pixels (0: none)
    dropout: float = 0.5           # drop probability before fc1 and fc2
    width_mult: float = 1.0        # scales every channel and hidden width
    seed: int = 0                  # weights, data order, shifts and dropout all follow it
    device: str = "auto"           # "auto": CUDA, else MPS, else CPU
    precision: str = "auto"        # "auto": bf16/fp16 where the hardware runs it natively
    channels_last: bool = True     # NHWC memory layout: faster convolutions on CPU and GPU
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
        need(isinstance(self.batch_size, int) and self.batch_size >= 1,
             f"batch size must be a positive integer, got {self.batch_size}")
        need(isinstance(self.eval_batch_size, int) and self.eval_batch_size >= 1,
             f"eval batch size must be positive, got {self.eval_batch_size}")
        need(math.isfinite(self.lr) and self.lr > 0, f"learning rate must be positive, got {self.lr}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"weight decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.warmup < 1, f"warmup must be a fraction in [0, 1), got {self.warmup}")
        need(0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        need(isinstance(self.shift, int) and 0 <= self.shift <= 8, f"shift must be 0..8 pixels, got {self.shift}")
        need(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a dict, ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


# The original write-up's recipe (with its bugs fixed elsewhere): the errata and the
# speed benchmark compare against it.
ORIGINAL_RECIPE = dict(batch_size=64, lr=0.01, momentum=0.9, weight_decay=0.0, schedule="constant",
                       label_smoothing=0.0, shift=0, precision="fp32", channels_last=False,
                       loader="torchvision")


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, else Apple's MPS, else CPU. A named device that is not there is an error."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' is not available on this machine (no CUDA GPU); use --device auto or cpu")
    if name == "mps" and not has_mps:
        raise ValueError("device 'mps' is not available on this machine (no Apple GPU); use --device auto or cpu")
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (x86 AVX512-BF16 or AMX, Arm BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def pick_precision(name: str, device: torch.device) -> str:
    """Resolve ``auto``: bf16 on GPUs and CPUs that run it natively, fp16 (with a gradient
    scaler) on older CUDA GPUs, fp32 elsewhere. An explicit choice the device lacks is an error."""
    if device.type == "cuda":
        bf16 = torch.cuda.get_device_capability(device)[0] >= 8
        auto = "bf16" if bf16 else "fp16"
    elif device.type == "cpu":
        bf16 = True  # runs everywhere, emulated where not native
        auto = "bf16" if cpu_has_native_bf16() else "fp32"
    else:
        bf16, auto = False, "fp32"
    if name == "auto":
        return auto
    if name == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA GPU, not {device.type}")
    if name == "bf16" and not bf16:
        raise ValueError(f"precision bf16 is not supported on {device.type} here")
    return name


def autocast(device: torch.device, precision: str):
    """The autocast context for a resolved precision (a no-op for fp32)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; weight decay on weights only, not on biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


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
    it was in. Returns ``{"loss": float, "accuracy": float in [0, 1], "count": int}``.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    try:
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with autocast(device, precision):
                logits = model(images)
            total_loss += nn.functional.cross_entropy(logits.float(), labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
            count += len(labels)
    finally:
        model.train(was_training)
    total_loss, correct, count = distributed.all_sum(total_loss, correct, count)  # sharded evaluation
    if count == 0:
        raise ValueError("evaluate got an empty loader")
    return {"loss": total_loss / count, "accuracy": correct / count, "count": count}


def train_step(model: nn.Module, images, labels, optimizer, scheduler, scaler, loss_fn, device,
               precision: str = "fp32", channels_last: bool = False) -> float:
    """One optimizer step on one batch; returns the batch's mean loss.

    Moves the batch to ``device``, runs the model under autocast, clears the old gradients,
    backpropagates (through the gradient scaler, a no-op unless fp16), steps the optimizer and
    the learning-rate schedule.
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
    return loss.item()


def _start_epoch(loader, seed: int, epoch: int, start_step: int):
    """Make ``loader`` replay epoch ``epoch`` from ``start_step``; returns the batch iterator."""
    if isinstance(loader, TensorLoader):
        loader.set_epoch(epoch, start_step)
        return iter(loader)
    generator = getattr(loader, "generator", None)
    if generator is not None:  # a DataLoader: its shuffle order follows this generator
        generator.manual_seed(seed * 1_000_003 + epoch)
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
    best_state: dict            # state_dict of the epoch with the best test accuracy
    best_epoch: int             # 1-based
    best_accuracy: float
    precision: str
    device: str

    def best_model(self) -> nn.Module:
        """A copy of the network with the best epoch's weights."""
        best = copy.deepcopy(self.model)
        best.load_state_dict(self.best_state)
        return best


def fit(model: nn.Module, train_loader, test_loader, cfg: TrainConfig, *, device=None,
        checkpoint_path=None, resume: dict | None = None, progress: bool = True,
        log=print) -> FitResult:
    """Train ``model`` for ``cfg.epochs`` epochs, evaluating on ``test_loader`` after each.

    With ``checkpoint_path`` a checkpoint is written atomically at every epoch end (and every
    ``cfg.checkpoint_every`` steps), and the best epoch's is kept beside it (see
    :func:`alexnet_tutorial.checkpoint.best_path`). ``resume`` is a loaded checkpoint to
    continue from: the run then ends bit-identical to one that was never interrupted.
    """
    device = torch.device(device) if device is not None else pick_device(cfg.device)
    device = distributed.setup(device)  # under torchrun: join the process group
    log, progress = distributed.on_main_only(log, progress)
    precision = pick_precision(cfg.precision, device)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model, device)  # DistributedDataParallel in several processes, else model
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, len(train_loader))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    epoch, step, history = 0, 0, []
    loss_sum, loss_count = 0.0, 0
    best = {"epoch": 0, "accuracy": -1.0, "state": None}
    if resume is not None:
        ckpt.restore_training(resume, model, optimizer, scheduler, scaler)
        epoch, step, history = resume["epoch"], resume["step"], list(resume["history"])
        loss_sum, loss_count = distributed.resumed_running(resume["running"])
        best = ckpt.restore_best(resume, checkpoint_path)

    def save(at_epoch, at_step):
        if checkpoint_path is None:
            return
        running = distributed.all_sum(loss_sum, loss_count)  # over all processes; only rank 0 writes
        if not distributed.is_main():
            return
        state = ckpt.training_state(model, optimizer, scheduler, scaler, cfg, epoch=at_epoch, step=at_step,
                                    history=history, running={"loss_sum": running[0], "count": running[1]},
                                    best={"epoch": best["epoch"], "accuracy": best["accuracy"]})
        ckpt.save_checkpoint(state, checkpoint_path)
        if at_step == 0 and best["epoch"] == at_epoch:
            ckpt.save_checkpoint(state, ckpt.best_path(checkpoint_path))

    if split := distributed.describe(cfg.batch_size):  # under torchrun: how the global batch is split
        log(split)
    log(f"training on {device.type}, precision {precision}, "
        f"{'channels_last' if cfg.channels_last else 'contiguous'}, {len(train_loader.dataset):,} images, "
        f"{len(train_loader)} steps per epoch")
    model.train()
    while epoch < cfg.epochs:
        started = time.perf_counter()
        batches = _start_epoch(train_loader, cfg.seed, epoch, step)
        bar = tqdm(batches, total=len(train_loader), initial=step, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, leave=False)
        for images, labels in bar:
            loss = train_step(net, images, labels, optimizer, scheduler, scaler, loss_fn, device, precision,
                              cfg.channels_last)
            loss_sum += loss * len(labels)
            loss_count += len(labels)
            step += 1
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / loss_count:.4f}")
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < len(train_loader):
                save(epoch, step)
        bar.close()
        seconds = time.perf_counter() - started
        loss_sum, loss_count = distributed.all_sum(loss_sum, loss_count)  # the epoch's loss over all processes
        result = evaluate(model, test_loader, device, precision)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(loss_count, 1),
                  "test_loss": result["loss"], "test_accuracy": result["accuracy"],
                  "seconds": seconds, "images_per_s": loss_count / seconds if seconds > 0 else 0.0}
        history.append(record)
        epoch, step, loss_sum, loss_count = epoch + 1, 0, 0.0, 0
        if record["test_accuracy"] > best["accuracy"]:
            best = {"epoch": epoch, "accuracy": record["test_accuracy"],
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        log(f"epoch {epoch}/{cfg.epochs}  train loss {record['train_loss']:.4f}  "
            f"test loss {record['test_loss']:.4f}  test accuracy {100 * record['test_accuracy']:.2f}%  "
            f"{seconds:.1f} s ({record['images_per_s']:,.0f} images/s)")
        save(epoch, 0)
    if best["state"] is None:  # resumed from a finished run's last checkpoint
        best["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return FitResult(model=model, history=history, best_state=best["state"], best_epoch=best["epoch"],
                     best_accuracy=best["accuracy"], precision=precision, device=str(device))


def build_loaders(cfg: TrainConfig, device: torch.device):
    """The training and test loaders ``cfg.loader`` asks for, on ``device``."""
    if cfg.loader == "torchvision":
        return make_loaders(cfg.batch_size, cfg.data_dir, cfg.subset, cfg.stratified, cfg.seed, cfg.eval_batch_size,
                            shift=cfg.shift)
    train_x, train_y = mnist_tensors(True, cfg.data_dir, device, cfg.subset, cfg.stratified)
    test_x, test_y = mnist_tensors(False, cfg.data_dir, device)
    train_loader = TensorLoader(train_x, train_y, cfg.batch_size, shuffle=True, seed=cfg.seed, shift=cfg.shift,
                                rank=distributed.rank(), world_size=distributed.world_size())  # a slice per process
    test_loader = TensorLoader(*distributed.shard(test_x, test_y), cfg.eval_batch_size)
    return train_loader, test_loader


def train(cfg: TrainConfig | None = None, *, out=None, resume=None, force: bool = False,
          progress: bool = True, log=print) -> FitResult:
    """Everything in one call: data, a seeded model, :func:`fit`, checkpoints.

    ``out`` is the checkpoint to write (its best epoch goes beside it); an existing file is
    never overwritten unless ``force=True``. ``resume`` is a checkpoint path to continue:
    its settings are used, and it is written on as the run goes.
    """
    resume = distributed.resume_after_restart(out, resume, log)  # torchrun restarted the job
    if resume is not None:
        state = ckpt.load_checkpoint(resume)
        cfg = TrainConfig.from_dict({**state["config"], **_overrides(cfg)})
        out = Path(out) if out is not None else Path(resume)
    else:
        state = None
        cfg = cfg or TrainConfig()
        if out is not None:
            out = Path(out)
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
    return fit(model, train_loader, test_loader, cfg, device=device, checkpoint_path=out,
               resume=state, progress=progress, log=log)


def _overrides(cfg: TrainConfig | None) -> dict:
    """On resume only where the data lives may change: every other setting is the run's own."""
    return {"data_dir": cfg.data_dir} if cfg is not None and cfg.data_dir else {}
