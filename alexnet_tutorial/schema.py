"""What a checkpoint holds, field by field, in each format version (chapter "Saving and loading").

:func:`validate` checks a loaded checkpoint against the schema of the version it declares, so
that a damaged or edited file is refused in one line naming the file and the field, before
anything reads it; :func:`foreign_kind` names a file that is no checkpoint at all.
"""

from __future__ import annotations

import codecs
import math

import torch

from .errors import CheckpointError

FORMAT = "alexnet-tutorial-checkpoint"
VERSION = 4  # 4: the weights' moving average; 3: no scheduler state (the learning rate is a function of
#            the step); 2: run_id, device and precision; 3, 2 and 1 are read too



# The first bytes of the two formats torch.save writes: a zip archive (since PyTorch 1.6), and
# before it a pickle that starts with torch's magic number.
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def foreign_kind(head: bytes) -> str | None:
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


def _average(value, field):
    _dict(value, field, {"model": _weights, "updates": _whole(1)})


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
# (version 1 had no run_id, device or precision; before 4, no average).
_SCHEMA = {
    "arch": (_text, 1), "width_mult": (_positive_finite, 1), "model": (_weights, 1), "config": (_config, 1),
    "epoch": (_whole(0), 1), "step": (_whole(0), 1), "history": (_records(_epoch_record), 1),
    "running": (_running, 1), "best": (_best, 1), "optimizer": (_optimizer, 1),
    "scaler": (_optional(_plain_dict), 1), "rng": (_rng, 1),
    "run_id": (_optional(_text), 2), "device": (_optional(_text), 2), "precision": (_optional(_text), 2),
    "average": (_optional(_average), 4),
}


def validate(state: dict, path) -> None:
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
