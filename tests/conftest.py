"""Shared fixtures: where MNIST lives, small real batches of it, and checkpoints made on the spot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from alexnet_tutorial import checkpoint as ckpt
from alexnet_tutorial.data import ENV_VAR, MNIST_FILES, mnist_tensors
from alexnet_tutorial.model import AlexNet
from alexnet_tutorial.training import TrainConfig, make_optimizer, make_scheduler

# CI clones the project beside the shared folder: <parent>/<clone> and <parent>/shared/data.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _has_mnist(root: Path) -> bool:
    raw = root / "MNIST" / "raw"
    return all((raw / name).is_file() for name in MNIST_FILES)


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
    pytest.skip(f"MNIST not found in {tried}: set {ENV_VAR} to a folder holding MNIST/raw/*-ubyte")


@pytest.fixture(scope="session")
def test_split(data_dir):
    """The whole normalised test split (10,000 images) as tensors on the CPU."""
    return mnist_tensors(False, data_dir)


@pytest.fixture(scope="session")
def train_sample(data_dir):
    """The first 512 normalised training images and their labels."""
    return mnist_tensors(True, data_dir, subset=512)


@pytest.fixture
def make_checkpoint():
    """A function writing a real checkpoint of ``model`` (no training needed) to ``path``."""

    def write(model: torch.nn.Module, path, cfg: TrainConfig | None = None, **position) -> Path:
        cfg = cfg or TrainConfig(width_mult=model.width_mult, device="cpu")
        optimizer = make_optimizer(model, cfg)
        scheduler = make_scheduler(optimizer, cfg, steps_per_epoch=10)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        state = ckpt.training_state(model, optimizer, scheduler, scaler, cfg,
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
