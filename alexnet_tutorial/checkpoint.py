"""Checkpoints: one self-describing file, written atomically, loaded safely (chapter
"Saving and loading").

A checkpoint is a plain dict of tensors, numbers and strings: model and optimizer state,
the weights' moving average (when the run keeps one), gradient scaler, random-number state,
settings, position in the run and the history so far. It is always read with
``torch.load(weights_only=True)``, which refuses pickled Python objects (the original pickled
a whole object, which can run code on load), and every field is then checked against the
schema of the format version the file declares.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from .config import require_resolved
from .errors import CheckpointError
from .schema import FORMAT, VERSION, foreign_kind, validate


def best_path(path) -> Path:
    """Where the best epoch's checkpoint lives beside ``path``: ``run.pt`` -> ``run.best.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.best{path.suffix or '.pt'}")


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
    kind = foreign_kind(head)
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
    validate(state, path)
    return state


def check_architecture(state: dict, model: nn.Module, path="checkpoint") -> None:
    """Refuse a checkpoint made for another architecture or width than ``model``."""
    arch = type(model).__name__
    width = getattr(model, "width_mult", None)
    if state["arch"] != arch:
        raise CheckpointError(f"{path}: checkpoint is for {state['arch']}, not {arch}")
    if width is not None and float(state["width_mult"]) != float(width):
        raise CheckpointError(f"{path}: checkpoint is for width_mult={state['width_mult']:g}, "
                              f"but the model has width_mult={width:g}")


def model_weights(state: dict, training: bool = False) -> dict:
    """The weights a checkpoint's run evaluated: the moving average of its weights when it kept
    one (format 4), else the weights themselves; ``training``: the weights being trained, which
    a resumed run goes on from."""
    average = state.get("average")
    return state["model"] if training or average is None else average["model"]


def load_weights(model: nn.Module, path_or_state, path=None, *, training: bool = False) -> nn.Module:
    """Load a checkpoint's weights (see :func:`model_weights`) into ``model`` after checking
    they were made for it."""
    state = path_or_state if isinstance(path_or_state, dict) else load_checkpoint(path_or_state)
    name = path or (path_or_state if not isinstance(path_or_state, dict) else "checkpoint")
    check_architecture(state, model, name)
    _put_weights(model, model_weights(state, training), name)
    return model


def _put_weights(model: nn.Module, weights: dict, name, assign: bool = False) -> None:
    """``model.load_state_dict(weights)``, a misfit reported in one line naming the file.
    ``assign`` puts the saved tensors in place (for a network built on the meta device), in the
    plain layout a freshly built network has, whatever layout they were saved in."""
    if assign:
        weights = {key: value.clone(memory_format=torch.contiguous_format) for key, value in weights.items()}
    try:
        model.load_state_dict(weights, assign=assign)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{name}: weights do not fit the model ({_why(exc)})") from None


def _why(exc: Exception) -> str:
    """A load_state_dict error in one line (with the missing keys), at most 300 characters."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def load_model(path, map_location="cpu") -> nn.Module:
    """The network stored in a checkpoint, rebuilt from its own settings, in eval mode: the
    network the run evaluated (its weights' average, when it kept one)."""
    from .model import AlexNet

    state = load_checkpoint(path, map_location)
    dropout = state["config"].get("dropout")
    # Built on the meta device, the network takes no memory until the saved weights are put in
    # its place: a width_mult edited to 1e4 is refused as weights that do not fit, not allocated.
    with torch.device("meta"):
        model = AlexNet(width_mult=float(state["width_mult"]), dropout=0.5 if dropout is None else float(dropout))
    check_architecture(state, model, path)
    _put_weights(model, model_weights(state), path, assign=True)
    return model.eval()


def _rng_state() -> dict:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        rng["mps"] = mps.get_rng_state()
    return rng


def _on_cpu(value):
    """``value`` (a state dict, nested or not) with CPU copies of its tensors: a checkpoint
    loads on any machine, and the run's later steps do not change what it saved."""
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    return value.detach().to("cpu", copy=True) if isinstance(value, torch.Tensor) else value


def training_state(model, optimizer, scaler, cfg, *, epoch: int, step: int,
                   history: list, running: dict, best: dict, run_id: str | None = None,
                   device: str | None = None, precision: str | None = None, average=None) -> dict:
    """The dict a checkpoint holds: enough to rebuild the model and to resume exactly.

    ``epoch`` counts finished epochs and ``step`` the steps done in the next one; ``best`` is
    the best epoch so far and its accuracy; ``run_id`` ties the run's ``.best`` file to it;
    ``device`` (type) and ``precision`` are what the run resolved, so that a resume can say
    when it runs elsewhere; ``average`` is the run's
    :class:`~alexnet_tutorial.training.WeightAverage`, if it keeps one."""
    return {
        "format": FORMAT, "version": VERSION,
        "arch": type(model).__name__, "width_mult": float(getattr(model, "width_mult", 1.0)),
        "model": _on_cpu(model.state_dict()),
        "average": _on_cpu(average.state_dict()) if average is not None else None,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "config": require_resolved(cfg, "a checkpoint").to_dict(),  # every setting as the run resolved it
        "epoch": epoch, "step": step,
        "history": [dict(h) for h in history],
        "running": dict(running),
        "best": dict(best),
        "run_id": run_id,
        "device": str(device) if device is not None else None, "precision": precision,
        "rng": _rng_state(),
        "torch_version": str(torch.__version__),
    }


def restore_training(state: dict, model, optimizer, scaler, average=None, path="checkpoint") -> None:
    """Put model, optimizer, the weights' average, gradient scaler and random-number state back
    as saved. (A version-2 file's scheduler state is not needed: the learning rate follows from
    the step.)"""
    load_weights(model, state, path, training=True)
    if average is not None:
        if state.get("average") is None:
            raise CheckpointError(f"{path}: checkpoint cannot be resumed: its run averages its weights "
                                  "(config average), but it holds no average")
        try:
            average.load_state_dict(state["average"])
        except (RuntimeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: the average's weights do not fit the model ({_why(exc)})") from None
    try:
        optimizer.load_state_dict(state["optimizer"])
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
