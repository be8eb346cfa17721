"""Every setting of a run, and the recipe rule that fills in the automatic ones (chapter "Training").

:class:`TrainConfig` is the one object the notebooks, the command line and the tests build.
Six of its settings default to ``None``: :func:`resolve_recipe` chooses them for the length of
the run, once per run, and the code downstream (the optimizer, the loop, the checkpoint) takes
only a resolved config. :data:`RESUMABLE` is the resume policy: which settings a resumed run may
change; the command line's help and its refusals are written from it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from .data import MNIST_TRAIN_CLASS_COUNTS
from .devices import DEVICES, PRECISIONS
from .errors import ConfigError

LOADERS = ("tensor", "torchvision")
SCHEDULES = ("onecycle", "constant")
MAX_SEED = 2**32 - 1
MAX_LR = 10.0          # a peak learning rate above this diverges at once for this network (SGD)
MAX_WIDTH_MULT = 16.0  # 16x every width: about 990 million parameters, 16 GB to train in fp32


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
    average: float | None = None   # decay per step of the weights' moving average the run evaluates (0: none)
    width_mult: float = 1.0        # scales every channel and hidden width
    seed: int = 0                  # 0 .. 2**32-1; weights, data order, shifts and dropout all follow it
    device: str = "auto"           # "auto": CUDA, else MPS, else CPU
    precision: str = "auto"        # "auto": bf16/fp16 where the hardware runs it natively
    channels_last: bool | None = None  # NHWC memory layout; None: on for CUDA and CPUs, off for MPS
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
        """Raise :class:`ConfigError` with a one-line message for a setting out of range."""
        for _field, ok, message in _checks(self):
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def is_resolved(self) -> bool:
        """True when no automatic (None) setting is left: :func:`resolve_recipe` has run."""
        return all(getattr(self, name) is not None for name in AUTO_FIELDS)

    def resolved(self, train_size: int | None = None) -> TrainConfig:
        """A copy with every automatic (None) setting chosen by :func:`resolve_recipe`."""
        return resolve_recipe(self, train_size)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a dict, ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checks(c: TrainConfig):
    """(field, holds, message) for every rule a setting must keep."""
    most = len(MNIST_TRAIN_CLASS_COUNTS) * min(MNIST_TRAIN_CLASS_COUNTS)
    finite = (lambda x: isinstance(x, (int, float)) and math.isfinite(x))
    return [
        ("epochs", _is_int(c.epochs) and 1 <= c.epochs <= 10_000, f"epochs must be 1 to 10000, got {c.epochs}"),
        ("batch_size", c.batch_size is None or _is_int(c.batch_size) and 1 <= c.batch_size <= 60_000,
         f"batch size must be 1 to 60000 images, got {c.batch_size}"),
        ("eval_batch_size", _is_int(c.eval_batch_size) and 1 <= c.eval_batch_size <= 10_000,
         f"eval batch size must be 1 to 10000, got {c.eval_batch_size}"),
        ("lr", c.lr is None or finite(c.lr) and 0 < c.lr <= MAX_LR,
         f"learning rate must be above 0 and at most {MAX_LR:g}, got {c.lr}"),
        ("momentum", finite(c.momentum) and 0 <= c.momentum < 1, f"momentum must be in [0, 1), got {c.momentum}"),
        ("weight_decay", finite(c.weight_decay) and 0 <= c.weight_decay <= 1,
         f"weight decay must be 0 to 1, got {c.weight_decay}"),
        ("warmup", finite(c.warmup) and 0 <= c.warmup < 1, f"warmup must be a fraction in [0, 1), got {c.warmup}"),
        ("label_smoothing", c.label_smoothing is None or finite(c.label_smoothing) and 0 <= c.label_smoothing < 1,
         f"label smoothing must be in [0, 1), got {c.label_smoothing}"),
        ("shift", c.shift is None or _is_int(c.shift) and 0 <= c.shift <= 8,
         f"shift must be 0..8 pixels, got {c.shift}"),
        ("dropout", c.dropout is None or finite(c.dropout) and 0 <= c.dropout < 1,
         f"dropout must be in [0, 1), got {c.dropout}"),
        ("average", c.average is None or finite(c.average) and 0 <= c.average < 1,
         f"average must be a decay in [0, 1) (0: no average), got {c.average}"),
        ("width_mult", finite(c.width_mult) and 0 < c.width_mult <= MAX_WIDTH_MULT,
         f"width_mult must be above 0 and at most {MAX_WIDTH_MULT:g}, got {c.width_mult}"),
        ("device", c.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {c.device!r}"),
        ("precision", c.precision in PRECISIONS,
         f"precision must be one of {', '.join(PRECISIONS)}, got {c.precision!r}"),
        ("loader", c.loader in LOADERS, f"loader must be one of {', '.join(LOADERS)}, got {c.loader!r}"),
        ("schedule", c.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {c.schedule!r}"),
        ("subset", c.subset is None or _is_int(c.subset) and 1 <= c.subset <= 60_000,
         f"subset must be between 1 and 60000 images, got {c.subset}"),
        ("checkpoint_every", _is_int(c.checkpoint_every) and c.checkpoint_every >= 0,
         f"checkpoint_every must be >= 0 steps, got {c.checkpoint_every}"),
        ("seed", _is_int(c.seed) and 0 <= c.seed <= MAX_SEED, f"seed must be a whole number from 0 to {MAX_SEED}, "
                                                              f"got {c.seed}"),
        ("stratified", not (c.stratified and c.subset and c.subset > most),
         f"a stratified subset can have at most {most} images (digit 5 has only "
         f"{min(MNIST_TRAIN_CLASS_COUNTS)} training images), got {c.subset}"),
        ("channels_last", c.channels_last is None or isinstance(c.channels_last, bool),
         f"channels_last must be None, True or False, got {c.channels_last!r}"),
        ("compile", isinstance(c.compile, bool), f"compile must be True or False, got {c.compile!r}"),
    ]


# The original write-up's recipe (with its bugs fixed elsewhere): the errata and the
# speed benchmark compare against it. Every automatic setting is fixed, the average too (the
# original keeps none), so that no length of run changes it.
ORIGINAL_RECIPE = dict(batch_size=64, lr=0.01, momentum=0.9, weight_decay=0.0, schedule="constant",
                       label_smoothing=0.0, shift=0, dropout=0.5, average=0.0, precision="fp32",
                       channels_last=False, loader="torchvision")

# The automatic recipe (resolve_recipe). Its full strength is tuned for the default full run,
# 5 epochs of 60,000 images; benchmarks/recipe.py measures it at other lengths.
AUTO_FIELDS = ("batch_size", "lr", "dropout", "label_smoothing", "shift", "average")
FULL_RUN_IMAGES = 5 * 60_000  # training images a full run sees: regularisation at full strength
BASE_BATCH, BASE_LR = 128, 0.05  # the full run's batch and peak learning rate
# A short run takes smaller batches (down to 32) to get at least this many steps, and with them a
# lower peak lr. One epoch of 60,000 at batch 128 (469 steps, peak 0.05) ended near 98.7%; at
# batch 64 (938 steps, 0.025) above 99.0% (benchmarks/results/recipe-sweep-60000x1.txt).
MIN_STEPS = 900
FULL_DROPOUT, FULL_SMOOTHING, FULL_SHIFT = 0.5, 0.1, 2
# An average of the weights (training.WeightAverage), for runs of one epoch of the full set up
# to the full run: with it one epoch's run first reached 99.0% after half the images, 3 seeds of
# 3 (benchmarks/results/speed-cpu-avx2-average-seeds.txt). The full run's 99.5% was measured
# without it, and shorter runs were not measured with it: both keep none.
AVERAGE_DECAY, AVERAGE_FROM = 0.99, 60_000


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
      on a short one it keeps the network from learning at all;
    - a moving average of the weights, decay :data:`AVERAGE_DECAY`, for runs of
      :data:`AVERAGE_FROM` images (one epoch of the full set) up to a full run; 0 (none) otherwise.
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
    if cfg.average is None:
        values["average"] = AVERAGE_DECAY if AVERAGE_FROM <= images < FULL_RUN_IMAGES else 0.0
    return replace(cfg, **values)


def require_resolved(cfg: TrainConfig, who: str) -> TrainConfig:
    """``cfg`` itself, or an error when an automatic setting is still None: the recipe is
    resolved once per run, by whoever starts it (``train``, or a notebook with ``cfg.resolved()``)."""
    if not cfg.is_resolved:
        left = ", ".join(name for name in AUTO_FIELDS if getattr(cfg, name) is None)
        raise ConfigError(f"{who} needs a resolved config ({left} still automatic): pass cfg.resolved(train_size)")
    return cfg


def describe_recipe(asked: TrainConfig, resolved: TrainConfig, train_size: int) -> str:
    """The log's ``recipe:`` line: the recipe of the run, and which settings the run's length
    chose (those ``asked`` left automatic); under it, on a line of its own,
    :func:`few_steps_note` when it has something to say."""
    # The average is named only in a run that keeps one.
    auto = [name for name in AUTO_FIELDS if getattr(asked, name) is None and (name != "average" or resolved.average)]
    images = train_size * resolved.epochs
    text = (f"recipe: batch {resolved.batch_size}, peak lr {resolved.lr:g}, dropout {resolved.dropout:g}, "
            f"label smoothing {resolved.label_smoothing:g}, shift {resolved.shift} px")
    if resolved.average:
        text += f", weights averaged (decay {resolved.average:g})"
    if auto:
        text += (f" ({', '.join(name.replace('_', ' ') for name in auto)} chosen for "
                 f"{resolved.epochs} x {train_size:,} = {images:,} training images)")
    note = few_steps_note(asked, resolved, train_size)
    return f"{text}\n{note}" if note else text


def few_steps_note(asked: TrainConfig, resolved: TrainConfig, train_size: int) -> str | None:
    """A log line when a batch given by hand leaves the run fewer than :data:`MIN_STEPS` steps
    where the automatic batch would give it more; None otherwise. Batch 1,024 for 5 epochs
    (295 steps) ended at 90.8% against 99.5% at batch 128 (benchmarks/results/recipe-sweep-batch1024.txt):
    this network learns from the number of steps, and a large batch needs more epochs."""
    if asked.batch_size is None:
        return None
    per_epoch = math.ceil(train_size / resolved.batch_size)
    steps = resolved.epochs * per_epoch
    auto = resolve_recipe(replace(asked, batch_size=None), train_size).batch_size
    if steps >= MIN_STEPS or resolved.batch_size <= auto:
        return None
    return (f"note: batch {resolved.batch_size} gives {steps:,} steps in all; runs of fewer than {MIN_STEPS} steps "
            f"ended below the automatic batch ({auto}) in benchmarks/README.md; "
            f"{math.ceil(MIN_STEPS / per_epoch)} epochs give this batch {MIN_STEPS} or more")


# The resume policy: what a resumed run may change, and why. Every other setting is part of
# the recipe and stays the run's own (the world size is checked by distributed.py).
RESUMABLE = {
    "epochs": "extend the run (never shorten it)",
    "device": "where it runs",
    "precision": "how it computes",
    "channels_last": "how it lays out memory",
    "compile": "whether it compiles the model",
    "data_dir": "where the data is",
    "checkpoint_every": "how often it saves",
    "eval_batch_size": "how it evaluates",
}


# Settings added after the first checkpoints were written, with the value a run saved before
# them trained with: a run resumed from such a file goes on as it started.
ADDED_SINCE = {"average": 0.0}


class ResumeMismatch(ConfigError):
    """A setting given for a resumed run differs from the one the run was started with."""

    def __init__(self, name: str, given, saved, path):
        self.name, self.given, self.saved = name, given, saved
        super().__init__(f"{name}={given!r} differs from the run's {name}={saved!r} in {path}; a resumed run "
                         f"keeps its recipe (only {', '.join(RESUMABLE)} may change)")


def resume_config(saved: dict, given: TrainConfig | dict | None, path="checkpoint") -> TrainConfig:
    """The settings of a resumed run: the checkpoint's ``saved`` ones, with the fields of
    :data:`RESUMABLE` taken from ``given`` (a config, or a dict of only the settings given,
    as the command line passes). Any other setting given must agree with the checkpoint's, or
    :class:`ResumeMismatch` names it; ``epochs`` may only grow."""
    base = TrainConfig.from_dict({**ADDED_SINCE, **saved})
    values = asdict(given) if isinstance(given, TrainConfig) else dict(given or {})
    for name, value in values.items():
        if name in RESUMABLE or name == "world_size" or (name in AUTO_FIELDS and value is None):
            continue
        if value != getattr(base, name, value):
            raise ResumeMismatch(name, value, getattr(base, name), path)
    changes = {name: values[name] for name in RESUMABLE if name in values}
    if changes.get("data_dir") is None:  # not given: the data stays where the run found it
        changes.pop("data_dir", None)
    if changes.get("epochs", base.epochs) < base.epochs:
        raise ConfigError(f"{path} is a run of {base.epochs} epochs, and a resumed run can only be extended: "
                          f"epochs must be at least {base.epochs}, got {changes['epochs']}")
    return replace(base, **changes)
