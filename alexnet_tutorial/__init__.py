"""An AlexNet-style CNN trained on MNIST, done right: the package behind the tutorial book."""

from .checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from .data import DataError, TensorLoader, make_loaders, mnist_dataset, mnist_tensors, resolve_data_dir
from .devices import pick_device, pick_precision
from .model import AlexNet, layer_table, summary
from .training import FitResult, TrainConfig, evaluate, fit, train

__version__ = "0.2.0"  # the one place the version is written (pyproject.toml reads it)

__all__ = [
    "AlexNet", "CheckpointError", "DataError", "FitResult", "TensorLoader", "TrainConfig", "evaluate",
    "fit", "layer_table", "load_checkpoint", "load_model", "make_loaders", "mnist_dataset", "mnist_tensors",
    "pick_device", "pick_precision", "resolve_data_dir", "save_checkpoint", "summary", "train",
]
