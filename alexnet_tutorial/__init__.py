"""An AlexNet-style CNN trained on MNIST, done right: the package behind the tutorial book.

The names below are imported on first use, so that ``import alexnet_tutorial.cli`` starts
without loading PyTorch (the command line answers Ctrl-C and ``--help`` at once).
"""

import importlib

__version__ = "0.2.0"  # the one place the version is written (pyproject.toml reads it)

_WHERE = {
    "AlexNet": "model", "layer_table": "model", "summary": "model", "eval_mode": "model",
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint", "load_model": "checkpoint",
    "save_checkpoint": "checkpoint",
    "DataError": "data", "TensorLoader": "data", "make_loaders": "data", "mnist_dataset": "data",
    "mnist_tensors": "data", "resolve_data_dir": "data",
    "pick_device": "devices", "pick_precision": "devices",
    "TrainConfig": "config", "UserError": "errors",
    "evaluate": "training", "train_steps": "training",
    "FitResult": "run", "fit": "run", "train": "run",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
