"""MNIST: where it lives, how it is checked, and two ways to batch it (chapter "The data").

The data root is resolved one way everywhere: an explicit argument, else the environment
variable ``ALEXNET_TUTORIAL_DATA``, else ``~/.cache/alexnet-tutorial``. torchvision reads
``<root>/MNIST/raw/*`` and downloads the files there when they are missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from .errors import UserError

ENV_VAR = "ALEXNET_TUTORIAL_DATA"
DEFAULT_DATA_DIR = Path("~/.cache/alexnet-tutorial").expanduser()

# Mean and standard deviation of all 60,000 training pixels, scaled to [0, 1]
# (chapter "The data" computes them).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# Training images of each digit 0-9 (the published split; digit 5 has the fewest).
MNIST_TRAIN_CLASS_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)

# name: (magic number, item count, bytes) of the four uncompressed MNIST files.
MNIST_FILES = {
    "train-images-idx3-ubyte": (2051, 60_000, 16 + 60_000 * 28 * 28),
    "train-labels-idx1-ubyte": (2049, 60_000, 8 + 60_000),
    "t10k-images-idx3-ubyte": (2051, 10_000, 16 + 10_000 * 28 * 28),
    "t10k-labels-idx1-ubyte": (2049, 10_000, 8 + 10_000),
}
IMAGE_SIDE = 28  # rows and columns of every MNIST image, as the images files' headers say
NUM_CLASSES = 10  # labels are the digits 0 to 9


class DataError(UserError, RuntimeError):
    """MNIST is missing or damaged; the message says which file and what to do."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir`` if given, else ``$ALEXNET_TUTORIAL_DATA``, else the default."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR


def _split_files(train: bool) -> list[str]:
    prefix = "train" if train else "t10k"
    return [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]


def check_files(root: Path, train: bool) -> bool:
    """True when the split's raw files are all present and intact, False when none is there.

    Raises :class:`DataError` for a file that is there but truncated, padded or not MNIST,
    naming the file and what to do.
    """
    raw = root / "MNIST" / "raw"
    present = 0
    for name in _split_files(train):
        path = raw / name
        if not path.exists():
            continue
        present += 1
        try:
            with open(path, "rb") as f:
                header = f.read(16)
            actual = path.stat().st_size
        except OSError as exc:
            raise DataError(f"cannot read MNIST file {path}: {exc.strerror}") from None
        problem = _header_problem(name, header, actual)
        if problem:
            raise DataError(f"MNIST file {path} is {problem}; delete it so that it is downloaded again, "
                            "or copy an intact one there")
    if 0 < present < len(_split_files(train)):
        missing = [n for n in _split_files(train) if not (raw / n).exists()]
        raise DataError(
            f"MNIST in {raw} is incomplete: {', '.join(missing)} is missing; "
            "copy it there or delete the folder so that it is downloaded again"
        )
    return present > 0


def _header_problem(name: str, header: bytes, size: int) -> str | None:
    """What is wrong with an MNIST file of ``size`` bytes whose first bytes are ``header``,
    in words (the magic number, the count, the image shape or the size); None if nothing."""
    magic, count, expected = MNIST_FILES[name]
    kind = "images" if magic == 2051 else "labels"
    found = int.from_bytes(header[:4], "big")
    if len(header) >= 4 and found != magic:
        return f"not an MNIST {kind} file (magic number {found}, expected {magic})"
    if len(header) >= 8 and int.from_bytes(header[4:8], "big") != count:
        return f"damaged (its header counts {int.from_bytes(header[4:8], 'big'):,} {kind}, expected {count:,})"
    if kind == "images" and len(header) >= 16:
        rows, cols = int.from_bytes(header[8:12], "big"), int.from_bytes(header[12:16], "big")
        if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
            return (f"damaged (its header gives images of {rows}x{cols} pixels, "
                    f"expected {IMAGE_SIDE}x{IMAGE_SIDE})")
    if size != expected:
        return f"corrupt or truncated ({size:,} bytes, expected {expected:,})"
    return None


def check_labels(labels: torch.Tensor, path) -> None:
    """Raise :class:`DataError` naming ``path`` and its first label outside 0..9 (one
    vectorised comparison over the whole split: a damaged byte, not a digit, would otherwise
    surface deep inside the loss as an ``IndexError``)."""
    bad = (labels < 0) | (labels >= NUM_CLASSES)
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        raise DataError(f"MNIST file {path} is damaged: record {first:,} (counting from 0, byte {8 + first:,}) "
                        f"holds the label {int(labels[first])}, not a digit 0 to {NUM_CLASSES - 1}; delete it "
                        "so that it is downloaded again, or copy an intact one there")


def mnist_dataset(train: bool, data_dir=None, transform=None, download: bool = True):
    """``torchvision.datasets.MNIST`` for one split, with clear errors instead of tracebacks.

    ``train=False`` is the real held-out test split: 10,000 images that share nothing with
    the 60,000 training images (the original built its "test" set with ``train=True``).
    """
    from torchvision import datasets

    root = resolve_data_dir(data_dir)
    raw = root / "MNIST" / "raw"
    # torchvision reads a split only when all four files are there: after an interrupted
    # download the other split's files are missing, and they must be fetched too.
    there = check_files(root, train) and check_files(root, not train)
    if not there and not download:
        raise DataError(_missing_message(root, "and downloading is off"))
    made = [] if there else _missing_folders(raw)  # the folders a download would create
    try:
        dataset = datasets.MNIST(root=str(root), train=train, transform=transform, download=not there)
    except BaseException as exc:  # network errors, permissions, half-downloaded archives, Ctrl-C
        if made:  # a mistyped --data-dir must not leave <dir>/MNIST/raw behind
            shutil.rmtree(made[0], ignore_errors=True)
        if not isinstance(exc, Exception):
            raise
        # torchvision's message lists each mirror it tried; its last line holds the cause.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(exc).__name__
        if there:
            raise DataError(f"cannot read MNIST in {raw} ({reason})") from None
        raise DataError(_missing_message(root, f"and the download failed ({reason})")) from None
    check_files(root, train)  # a fresh download is checked too
    check_labels(dataset.targets, raw / _split_files(train)[1])
    return dataset


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and the folders above it that do not exist yet, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


def _missing_message(root: Path, why: str) -> str:
    return (
        f"MNIST is not in {root / 'MNIST' / 'raw'} {why}. Connect to the internet, or point "
        f"--data-dir or ${ENV_VAR} at a folder that holds MNIST/raw/train-images-idx3-ubyte "
        "and the other three MNIST files"
    )


def default_transform():
    """ToTensor then normalisation with MNIST's mean and standard deviation."""
    from torchvision import transforms

    return transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])


def subset_indices(targets: torch.Tensor, n: int, stratified: bool = False) -> torch.Tensor:
    """Indices of ``n`` training images: the first ``n``, or with ``stratified=True`` the first
    images of each class in turn, so that every digit gets ``n // 10`` images (the lowest
    digits one more each until ``n`` is reached)."""
    total = len(targets)
    if not 1 <= n <= total:
        raise ValueError(f"subset must be between 1 and {total}, got {n}")
    if not stratified:
        return torch.arange(n)
    classes = torch.unique(targets)
    per_class = [n // len(classes) + (1 if i < n % len(classes) else 0) for i in range(len(classes))]
    picked = []
    for c, k in zip(classes.tolist(), per_class):
        idx = torch.nonzero(targets == c).flatten()[:k]
        if len(idx) < k:
            raise ValueError(f"a stratified subset of {n} images needs {k} images of digit {c}, "
                             f"but there are only {len(idx)}")
        picked.append(idx)
    return torch.sort(torch.cat(picked)).values


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s data order and shifts: a function of the run's seed and
    the epoch alone, so that any epoch can be replayed (both loaders use it)."""
    return seed * 1_000_003 + epoch


def make_loaders(batch_size: int = 128, data_dir=None, subset: int | None = None,
                 stratified: bool = False, seed: int = 0, eval_batch_size: int = 1000,
                 transform=None, shift: int = 0, drop_last: bool = False):
    """The torchvision way: per-item datasets and ``DataLoader`` s (shuffled, seeded) for
    training and evaluation. ``shift`` moves each training image by up to that many pixels
    (``RandomAffine``), as :class:`TensorLoader` does; ``drop_last`` drops a short last training
    batch. Returns ``(train_loader, test_loader)``."""
    from torchvision import transforms

    transform = transform or default_transform()
    train_transform = transform
    if shift:
        move = transforms.RandomAffine(0, translate=(shift / 28, shift / 28))
        train_transform = transforms.Compose([move, transform])
    train_set = mnist_dataset(True, data_dir, train_transform)
    test_set = mnist_dataset(False, data_dir, transform)
    if subset is not None:
        train_set = Subset(train_set, subset_indices(train_set.targets, subset, stratified).tolist())
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator,
                              drop_last=drop_last)
    test_loader = DataLoader(test_set, batch_size=eval_batch_size, shuffle=False)
    return train_loader, test_loader


def mnist_tensors(train: bool, data_dir=None, device="cpu", subset: int | None = None,
                  stratified: bool = False):
    """A whole split as two tensors on ``device``: normalised images N x 1 x 28 x 28 (float32)
    and labels N (int64). No per-item PIL conversion (chapter "Speed")."""
    dataset = mnist_dataset(train, data_dir)
    images, labels = dataset.data, dataset.targets
    if subset is not None:
        idx = subset_indices(labels, subset, stratified)
        images, labels = images[idx], labels[idx]
    images = images.to(device=device, dtype=torch.float32).unsqueeze(1).div_(255)
    images = images.sub_(MNIST_MEAN).div_(MNIST_STD)
    return images, labels.to(device)


class TensorLoader:
    """Batches as index slices of tensors that already live on the training device.

    The order of epoch ``e`` is a permutation drawn from a generator seeded with
    ``(seed, e)``, and so are the random shifts, so any epoch (and any step within it)
    can be replayed exactly: that is what makes resuming a killed run bit-identical.
    ``shift`` moves each training image by up to that many pixels in x and y; ``drop_last``
    drops a short last batch, so that every batch has one shape (for ``torch.compile``).

    With ``world_size`` processes (chapter "More than one process") every one draws the same
    order and cuts the same batches, and process ``rank`` takes its contiguous slice of each;
    the last ``len % world_size`` images of each epoch's order are left out so all slices are equal.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 shuffle: bool = False, seed: int = 0, shift: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1):
        if len(images) != len(labels):
            raise ValueError("images and labels differ in length")
        if not 0 <= rank < world_size or batch_size % world_size:
            raise ValueError(f"rank {rank} of {world_size} processes cannot take an equal slice of {batch_size}")
        self.rank, self.world_size = rank, world_size
        self.used = len(labels) - len(labels) % world_size  # images per epoch, all processes together
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed, self.shift = batch_size, shuffle, seed, shift
        self.drop_last = drop_last
        self.epoch, self.start_step = 0, 0
        self.background = float(images.min()) if len(images) else 0.0

    def __len__(self) -> int:
        if self.drop_last:
            return self.used // self.batch_size
        return (self.used + self.batch_size - 1) // self.batch_size

    @property
    def dataset(self):  # len(loader.dataset) works as for a DataLoader
        return self.labels

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Choose the epoch whose order the next iteration replays, from ``start_step`` on."""
        self.epoch, self.start_step = epoch, start_step

    def __iter__(self):
        n, device = len(self.labels), self.labels.device
        order = shifts = None
        if self.shuffle or self.shift:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            if self.shuffle:
                order = torch.randperm(n, generator=g).to(device)
            if self.shift:
                shifts = torch.randint(-self.shift, self.shift + 1, (n, 2), generator=g).to(device)
        for step in range(self.start_step, len(self)):
            idx = slice(step * self.batch_size, min((step + 1) * self.batch_size, self.used))
            batch = order[idx] if order is not None else idx  # a slice is a view: no copy
            if self.world_size > 1:  # this process's slice of the global batch
                if order is None:
                    batch = torch.arange(idx.start, idx.stop, device=device)
                part = len(batch) // self.world_size
                batch = batch[self.rank * part:(self.rank + 1) * part]
            x, y = self.images[batch], self.labels[batch]
            if shifts is not None:
                x = shift_images(x, shifts[batch], self.shift, self.background)
            yield x, y
        self.start_step = 0


def shift_images(x: torch.Tensor, shifts: torch.Tensor, pad: int, fill: float) -> torch.Tensor:
    """Translate each image of ``x`` (N x 1 x H x W) by its own ``(dy, dx)`` in ``shifts``,
    filling the uncovered border with ``fill`` (the background value)."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=fill)
    rows = torch.arange(h, device=x.device) + pad - shifts[:, 0:1]  # n x h
    cols = torch.arange(w, device=x.device) + pad - shifts[:, 1:2]  # n x w
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)
