"""Whatever bytes a file holds, loading it gives a result or the package's own error, nothing else."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alexnet_tutorial.checkpoint import CheckpointError, load_checkpoint
from alexnet_tutorial.images import ImageError, load_image
from alexnet_tutorial.model import AlexNet

# derandomize: the same 150 inputs on every run and machine, so that a failure seen in CI
# replays anywhere; print_blob: a failure also prints the @reproduce_failure line for it.
FUZZ = settings(max_examples=150, deadline=None, database=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


@pytest.fixture(scope="module")
def checkpoint_bytes(folder):
    """A real checkpoint, as small as the network allows."""
    from alexnet_tutorial.checkpoint import save_checkpoint, training_state
    from alexnet_tutorial.config import TrainConfig
    from alexnet_tutorial.training import make_optimizer

    torch.manual_seed(0)
    model = AlexNet(width_mult=0.05)
    cfg = TrainConfig(width_mult=0.05).resolved()
    optimizer = make_optimizer(model, cfg)
    state = training_state(model, optimizer, None, cfg, epoch=1, step=0,
                           history=[{"epoch": 1, "train_loss": 2.0, "test_loss": 1.9, "test_accuracy": 0.4}],
                           running={"loss_sum": 0.0, "count": 0}, best={"epoch": 1, "accuracy": 0.4})
    path = save_checkpoint(state, folder / "small.pt")
    load_checkpoint(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def png_bytes(draw_digit):
    buffer = io.BytesIO()
    draw_digit(text="5", size=(40, 48)).save(buffer, format="PNG")
    return buffer.getvalue()


def write(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


def mutated(original: bytes):
    """Bytes made from ``original``: cut short, or with some bytes overwritten."""
    cut = st.integers(0, len(original) - 1).map(lambda n: original[:n])
    flips = st.lists(st.tuples(st.integers(0, len(original) - 1), st.integers(0, 255)), min_size=1, max_size=8)

    def flip(changes):
        data = bytearray(original)
        for index, value in changes:
            data[index] = value
        return bytes(data)

    return st.one_of(cut, flips.map(flip))


def check_checkpoint(path: Path):
    try:
        state = load_checkpoint(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(state, dict) and "model" in state


def check_image(path: Path):
    try:
        gray = load_image(path)
    except ImageError as exc:
        assert str(path) in str(exc)
    else:
        assert gray.ndim == 2 and gray.dtype == np.float32
        assert 0 <= gray.min() <= gray.max() <= 1


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on random bytes
@FUZZ
@given(content=st.binary(max_size=4096))
def test_random_bytes_as_a_checkpoint(folder, content):
    path = write(folder, "random.pt", content)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@FUZZ
@given(content=st.binary(max_size=4096))
def test_random_bytes_as_an_image(folder, content):
    path = write(folder, "random.png", content)
    check_image(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@FUZZ
@given(data=st.data())
def test_damaged_real_checkpoint(folder, checkpoint_bytes, data):
    content = data.draw(mutated(checkpoint_bytes))
    check_checkpoint(write(folder, "damaged.pt", content))


@FUZZ
@given(data=st.data())
def test_damaged_real_png(folder, png_bytes, data):
    content = data.draw(mutated(png_bytes))
    check_image(write(folder, "damaged.png", content))


def test_fuzzing_draws_the_same_inputs_on_every_run():
    def drawn():
        seen = []

        @FUZZ
        @given(content=st.binary(max_size=4096))
        def record(content):
            seen.append(content)

        record()
        return seen

    first = drawn()
    assert len(first) > 100 and len(set(first)) > 100
    assert drawn() == first
