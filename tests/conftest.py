"""Shared fixtures: where MNIST lives, small real batches of it, checkpoints made on the spot,
runs of seconds, and the helpers the training tests share (stopping a run after a checkpoint,
comparing histories without their timings, comparing weights)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from alexnet_tutorial import checkpoint as ckpt
from alexnet_tutorial import run as run_mod
from alexnet_tutorial.config import TrainConfig
from alexnet_tutorial.data import ENV_VAR, MNIST_FILES, TensorLoader, mnist_tensors
from alexnet_tutorial.model import AlexNet
from alexnet_tutorial.training import make_optimizer

# CI clones the project beside the shared folder: <parent>/<clone> and <parent>/shared/data.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TIMING_FIELDS = {"seconds", "images_per_s"}  # the fields of a history record that differ from run to run
TINY_TEST_IMAGES = 500  # the test images a `tiny` run evaluates on (not all 10,000: seconds, not minutes)


def _has_mnist(root: Path) -> bool:
    raw = root / "MNIST" / "raw"
    return all((raw / name).is_file() for name in MNIST_FILES)


def missing_mnist(message: str) -> None:
    """Skip a test that needs MNIST when it is not here; in CI (``$CI`` set) fail it instead,
    so that a run without the data cannot pass by skipping every test that trains."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The MNIST root: $ALEXNET_TUTORIAL_DATA if set, else ``shared/data`` beside the checkout."""
    env = os.environ.get(ENV_VAR)
    candidates = [Path(env).expanduser()] if env else []
    candidates.append(SHARED_DATA)
    for root in candidates:
        if _has_mnist(root):
            return root.resolve()
    tried = " or ".join(str(c) for c in candidates)
    missing_mnist(f"MNIST not found in {tried}: set {ENV_VAR} to a folder holding MNIST/raw/*-ubyte")


@pytest.fixture(scope="session")
def test_split(data_dir):
    """The whole normalised test split (10,000 images) as tensors on the CPU."""
    return mnist_tensors(False, data_dir)


@pytest.fixture(scope="session")
def train_sample(data_dir):
    """The first 512 normalised training images and their labels."""
    return mnist_tensors(True, data_dir, subset=512)


@pytest.fixture
def small_test_set(monkeypatch):
    """While the test runs, every run that ``train`` (or the command line) starts evaluates on
    the first ``TINY_TEST_IMAGES`` test images only: seconds, not the 10,000 images' minutes."""
    real = run_mod.build_loaders

    def build_loaders(cfg, device):
        train_loader, test_loader = real(cfg, device)
        if isinstance(test_loader, TensorLoader):
            n = TINY_TEST_IMAGES
            test_loader = TensorLoader(test_loader.images[:n], test_loader.labels[:n], cfg.eval_batch_size)
        return train_loader, test_loader

    monkeypatch.setattr(run_mod, "build_loaders", build_loaders)


@pytest.fixture
def tiny(data_dir, small_test_set):
    """A function making a TrainConfig for a run of seconds: 128 real training images, 4 steps
    an epoch, a quarter-width network on the CPU in fp32, evaluated on a small test set."""

    def make(**overrides):
        settings = dict(subset=128, epochs=2, batch_size=32, width_mult=0.25, device="cpu", precision="fp32",
                        data_dir=str(data_dir))
        return TrainConfig(**{**settings, **overrides})

    return make


@pytest.fixture
def stop_after(monkeypatch):
    """A function ``arm(epoch, step, before=False)``: the next run stops (raises
    KeyboardInterrupt, as if killed) right after it writes its main checkpoint at ``(epoch,
    step)``, once (a resumed run passes the same point again). With ``before=True`` it stops
    instead of writing that main file, after the ``.best`` file was written. Returns the list
    of paths it stopped at."""
    real = ckpt.save_checkpoint

    def arm(epoch: int, step: int, before: bool = False) -> list:
        fired = []

        def save(state, path):
            hit = (not fired and (state["epoch"], state["step"]) == (epoch, step)
                   and not str(path).endswith(".best.pt"))
            if hit:
                fired.append(path)
                if before:
                    raise KeyboardInterrupt
            real(state, path)
            if hit:
                raise KeyboardInterrupt

        monkeypatch.setattr(ckpt, "save_checkpoint", save)
        return fired

    return arm


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in TIMING_FIELDS} for record in history]


def _weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="session")
def without_timing():
    """A function: a run's history without the fields that differ between two identical runs."""
    return _without_timing


@pytest.fixture(scope="session")
def weights_equal():
    """A function: True when two state dicts hold the same names and the same bits."""
    return _weights_equal


@pytest.fixture
def make_checkpoint():
    """A function writing a real checkpoint of ``model`` (no training needed) to ``path``."""

    def write(model: torch.nn.Module, path, cfg: TrainConfig | None = None, **position) -> Path:
        cfg = (cfg or TrainConfig(width_mult=model.width_mult, device="cpu")).resolved()
        optimizer = make_optimizer(model, cfg)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        state = ckpt.training_state(model, optimizer, scaler, cfg,
                                    epoch=position.get("epoch", 1), step=position.get("step", 0),
                                    history=position.get("history", []),
                                    running={"loss_sum": 0.0, "count": 0}, best={"epoch": 0, "accuracy": -1.0})
        return ckpt.save_checkpoint(state, path)

    return write


@pytest.fixture
def seeded_model():
    """A function building an AlexNet with weights fixed by ``seed``."""

    def build(seed: int = 0, width_mult: float = 1.0, dropout: float = 0.5) -> AlexNet:
        torch.manual_seed(seed)
        return AlexNet(width_mult=width_mult, dropout=dropout)

    return build


def _draw(text: str = "7", size=(240, 300), ink=0, paper=255, mode="L", thickness=None):
    """A digit as a person might photograph or draw it: ``text`` in a large scalable font
    (or, with ``thickness``, a hand-drawn 7 of thick lines), ``ink`` on ``paper``."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(img)
    w, h = size
    if thickness:
        draw.line([(0.25 * w, 0.2 * h), (0.75 * w, 0.2 * h), (0.4 * w, 0.8 * h)], fill=ink, width=thickness)
    else:
        font = ImageFont.load_default(size=int(0.7 * min(w, h) * 1.3))
        draw.text((w / 2, h / 2), text, fill=ink, font=font, anchor="mm")
    return img


@pytest.fixture(scope="session")
def draw_digit():
    """A function drawing a digit with PIL; returns a ``PIL.Image``."""
    return _draw
