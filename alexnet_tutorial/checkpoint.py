"""Checkpoints: one self-describing file, written atomically, loaded safely (chapter
"Saving and loading").

A checkpoint is a plain dict of tensors, numbers and strings: model and optimizer state,
scheduler, gradient scaler, random-number state, settings, position in the run and the
history so far. It is always read with ``torch.load(weights_only=True)``, which refuses
pickled Python objects (the original pickled a whole object, which can run code on load),
and every field is then checked against the schema of the format version the file declares.
"""

from __future__ import annotations

import codecs
import math
import os
import re
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import UserError

FORMAT = "alexnet-tutorial-checkpoint"
VERSION = 2  # 2: run_id, device and precision; 1 is read too


class CheckpointError(UserError, RuntimeError):
    """A file that cannot be used as a checkpoint; the message names it and says why."""


# The first bytes of the two formats torch.save writes: a zip archive (since PyTorch 1.6), and
# before it a pickle that starts with torch's magic number.
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def best_path(path) -> Path:
    """Where the best epoch's checkpoint lives beside ``path``: ``run.pt`` -> ``run.best.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.best{path.suffix or '.pt'}")


def check_writable(path) -> None:
    """Fail early, before any training, when ``path``'s folder cannot take a file."""
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise CheckpointError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise CheckpointError(f"cannot write {path}: folder {folder} is not writable")


def save_checkpoint(state: dict, path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, flushed
    to disk, then renamed over ``path``. A crash leaves the old file or the new, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint with ``weights_only=True`` and check every field against the schema
    of the version it declares. Anything else (a pickled object, a truncated or foreign file,
    a field missing or of the wrong type) raises :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror})") from None
    kind = _foreign_kind(head)
    if kind:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({kind})")
    try:
        with warnings.catch_warnings():  # torch's notes on odd files: the one line below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for bad bytes
        if re.search(r"unsupported global", str(exc), re.IGNORECASE):  # a class or function, not data
            raise CheckpointError(f"{path}: holds pickled Python objects, which are not loaded because "
                                  "loading them could run arbitrary code") from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or damaged)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a PyTorch file, but not an alexnet-tutorial checkpoint")
    _validate(state, path)
    return state


def _foreign_kind(head: bytes) -> str | None:
    """What a file is, from its first bytes, when it is not one torch.save wrote; else None."""
    if head.startswith((ZIP_MAGIC, LEGACY_MAGIC)):
        return None
    if not head:
        return "the file is empty"
    signatures = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
                  b"%PDF": "a PDF document", b"\x1f\x8b": "a gzip archive"}
    for signature, name in signatures.items():
        if head.startswith(signature):
            return name
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocols 2 to 5
        return "a Python pickle, not written by torch.save"
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head)  # a character cut at byte 64 is fine
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "a text file"
    return "neither of the formats torch.save writes"


class _Bad(Exception):
    """One field that does not hold what the schema says; the message names it."""


def _type_name(value) -> str:
    return "None" if value is None else type(value).__name__


def _need(ok: bool, field: str, what: str, value) -> None:
    if not ok:
        raise _Bad(f"{field} of the wrong type: expected {what}, got {_type_name(value)}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dict(value, field: str, keys: dict) -> None:
    """``value`` is a dict that holds each of ``keys``, each passing its check."""
    _need(isinstance(value, dict), field, "a dict", value)
    for key, check in keys.items():
        if key not in value:
            raise _Bad(f"no {field}.{key}")
        check(value[key], f"{field}.{key}")


def _whole(low: int = 0):
    def check(value, field):
        _need(_is_whole(value), field, "a whole number", value)
        if value < low:
            raise _Bad(f"{field} is {value}, expected {low} or more")
    return check


def _number(low: float | None = None, high: float | None = None):
    """A number; with bounds, one from ``low`` to ``high`` (a loss may be NaN, a bounded value not)."""
    def check(value, field):
        _need(_is_number(value), field, "a number", value)
        if low is not None and not low <= value <= high:
            raise _Bad(f"{field} is {value}, expected {low:g} to {high:g}")
    return check


def _text(value, field):
    _need(isinstance(value, str), field, "a string", value)


def _optional(check):
    def maybe(value, field):
        if value is not None:
            check(value, field)
    return maybe


def _plain_dict(value, field):
    _need(isinstance(value, dict), field, "a dict", value)


def _positive_finite(value, field):
    _need(_is_number(value), field, "a number", value)
    if not (math.isfinite(value) and value > 0):
        raise _Bad(f"{field} is {value}, expected a finite number above 0")


def _weights(value, field):
    _need(isinstance(value, dict), field, "a dict of tensors", value)
    for key, tensor in value.items():
        _need(isinstance(key, str) and torch.is_tensor(tensor), f"{field}.{key}", "a tensor", tensor)
    for key, tensor in value.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise _Bad(f"{field}.{key} holds NaN or infinite values: the weights cannot predict anything "
                       "(a run that diverged writes such weights)")


def _running(value, field):
    _dict(value, field, {"loss_sum": _number(), "count": _whole(0)})


def _best(value, field):
    _dict(value, field, {"epoch": _whole(0), "accuracy": _number()})


def _optimizer(value, field):
    _dict(value, field, {"state": _plain_dict, "param_groups": _records(_plain_dict)})


def _records(check):
    def each(value, field):
        _need(isinstance(value, list), field, "a list", value)
        for i, item in enumerate(value):
            check(item, f"{field}[{i}]")
    return each


def _epoch_record(value, field):
    _dict(value, field, {"epoch": _whole(1), "train_loss": _number(), "test_loss": _number(),
                         "test_accuracy": _number(0.0, 1.0)})
    for key in ("seconds", "images_per_s"):
        if key in value:
            _number()(value[key], f"{field}.{key}")


def _byte_tensor(value, field):
    _need(torch.is_tensor(value) and value.dtype == torch.uint8, field, "a uint8 tensor", value)


def _rng(value, field):
    _dict(value, field, {"torch": _byte_tensor})
    if "cuda" in value:
        _need(isinstance(value["cuda"], (list, tuple)), f"{field}.cuda", "a list", value["cuda"])
        for i, state in enumerate(value["cuda"]):
            _byte_tensor(state, f"{field}.cuda[{i}]")
    if "mps" in value:
        _byte_tensor(value["mps"], f"{field}.mps")


def _config(value, field):
    _need(isinstance(value, dict), field, "a dict", value)
    if value.get("dropout") is not None:  # load_model builds the network with it
        _number(0.0, 1.0)(value["dropout"], f"{field}.dropout")


# Every field load_model and a resume read: its check, and the format version that added it
# (version 1 had no run_id, device or precision).
_SCHEMA = {
    "arch": (_text, 1), "width_mult": (_positive_finite, 1), "model": (_weights, 1), "config": (_config, 1),
    "epoch": (_whole(0), 1), "step": (_whole(0), 1), "history": (_records(_epoch_record), 1),
    "running": (_running, 1), "best": (_best, 1), "optimizer": (_optimizer, 1),
    "scheduler": (_optional(_plain_dict), 1), "scaler": (_optional(_plain_dict), 1), "rng": (_rng, 1),
    "run_id": (_optional(_text), 2), "device": (_optional(_text), 2), "precision": (_optional(_text), 2),
}


def _validate(state: dict, path) -> None:
    """Check each field of ``state`` against the schema of the format version it declares;
    the first failure raises :class:`CheckpointError` naming the file and the field."""
    version = state.get("version")
    if not _is_whole(version):
        raise CheckpointError(f"{path}: checkpoint is damaged (version of the wrong type: expected a whole "
                              f"number, got {_type_name(version)})")
    if version > VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version} is newer than this package reads "
                              f"({VERSION}); upgrade alexnet-tutorial")
    if version < 1:
        raise CheckpointError(f"{path}: checkpoint is damaged (version is {version}; formats 1 to {VERSION} "
                              "exist)")
    fields = {name: check for name, (check, since) in _SCHEMA.items() if since <= version}
    missing = [name for name in fields if name not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is incomplete (no {', '.join(missing)})")
    try:
        for name, check in fields.items():
            check(state[name], name)
    except _Bad as bad:
        what = str(bad)
        if what.startswith("no "):
            raise CheckpointError(f"{path}: checkpoint is incomplete ({what})") from None
        raise CheckpointError(f"{path}: checkpoint is damaged ({what})") from None


def check_architecture(state: dict, model: nn.Module, path="checkpoint") -> None:
    """Refuse a checkpoint made for another architecture or width than ``model``."""
    arch = type(model).__name__
    width = getattr(model, "width_mult", None)
    if state["arch"] != arch:
        raise CheckpointError(f"{path}: checkpoint is for {state['arch']}, not {arch}")
    if width is not None and float(state["width_mult"]) != float(width):
        raise CheckpointError(f"{path}: checkpoint is for width_mult={state['width_mult']:g}, "
                              f"but the model has width_mult={width:g}")


def load_weights(model: nn.Module, path_or_state, path=None) -> nn.Module:
    """Load a checkpoint's weights into ``model`` after checking they were made for it."""
    state = path_or_state if isinstance(path_or_state, dict) else load_checkpoint(path_or_state)
    name = path or (path_or_state if not isinstance(path_or_state, dict) else "checkpoint")
    check_architecture(state, model, name)
    _put_weights(model, state["model"], name)
    return model


def _put_weights(model: nn.Module, weights: dict, name, assign: bool = False) -> None:
    """``model.load_state_dict(weights)``, a misfit reported in one line naming the file.
    ``assign`` puts the saved tensors themselves in place (for a network built on the meta device)."""
    try:
        model.load_state_dict(weights, assign=assign)
    except (RuntimeError, KeyError, TypeError) as exc:
        why = " ".join(str(exc).split())[:300] or type(exc).__name__  # one line, with the missing keys
        raise CheckpointError(f"{name}: weights do not fit the model ({why})") from None


def load_model(path, map_location="cpu") -> nn.Module:
    """The network stored in a checkpoint, rebuilt from its own settings, in eval mode."""
    from .model import AlexNet

    state = load_checkpoint(path, map_location)
    dropout = state["config"].get("dropout")
    # Built on the meta device, the network takes no memory until the saved weights are put in
    # its place: a width_mult edited to 1e4 is refused as weights that do not fit, not allocated.
    with torch.device("meta"):
        model = AlexNet(width_mult=float(state["width_mult"]), dropout=0.5 if dropout is None else float(dropout))
    check_architecture(state, model, path)
    _put_weights(model, state["model"], path, assign=True)
    return model.eval()


def _rng_state() -> dict:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        rng["mps"] = mps.get_rng_state()
    return rng


def training_state(model, optimizer, scheduler, scaler, cfg, *, epoch: int, step: int,
                   history: list, running: dict, best: dict, run_id: str | None = None,
                   device: str | None = None, precision: str | None = None) -> dict:
    """The dict a checkpoint holds: enough to rebuild the model and to resume exactly.

    ``epoch`` counts finished epochs and ``step`` the steps done in the next one; ``best`` is
    the best epoch so far and its accuracy; ``run_id`` ties the run's ``.best`` file to it;
    ``device`` (type) and ``precision`` are what the run resolved, so that a resume can say
    when it runs elsewhere."""
    return {
        "format": FORMAT, "version": VERSION,
        "arch": type(model).__name__, "width_mult": float(getattr(model, "width_mult", 1.0)),
        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "config": cfg.resolved().to_dict(),  # every automatic setting as the run resolved it
        "epoch": epoch, "step": step,
        "history": [dict(h) for h in history],
        "running": dict(running),
        "best": dict(best),
        "run_id": run_id,
        "device": str(device) if device is not None else None, "precision": precision,
        "rng": _rng_state(),
        "torch_version": str(torch.__version__),
    }


def restore_training(state: dict, model, optimizer, scheduler, scaler) -> None:
    """Put model, optimizer, scheduler, scaler and random-number state back as saved."""
    load_weights(model, state)
    try:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and scaler.is_enabled() and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if "mps" in state["rng"] and torch.backends.mps.is_available():
            torch.mps.set_rng_state(state["rng"]["mps"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"checkpoint cannot be resumed: {exc}") from None


def best_from_history(history: list) -> dict:
    """The best epoch of a history (1-based) and its test accuracy; epoch 0 when empty."""
    if not history:
        return {"epoch": 0, "accuracy": -1.0}
    top = max(history, key=lambda h: h["test_accuracy"])  # the first of equals, as training keeps it
    return {"epoch": int(top["epoch"]), "accuracy": float(top["test_accuracy"])}


def find_best(state: dict, path=None) -> dict | None:
    """The checkpoint that holds the best epoch's weights of the run in ``state`` (read from
    ``path``): ``state`` itself when it was written at the end of that epoch, else the
    ``.best`` file beside ``path`` when it belongs to the same run and epoch; else None."""
    best = state.get("best") or best_from_history(state["history"])
    if not best["epoch"]:
        return None
    if best["epoch"] == state["epoch"] and state.get("step", 0) == 0:
        return state
    if path is not None and best_path(path).exists():
        saved = load_checkpoint(best_path(path))
        if saved.get("run_id") == state.get("run_id") and saved["epoch"] == best["epoch"]:
            return saved
    return None
