"""Damaged and odd inputs: each checkpoint or image refused in one line that names the file and
says what is wrong, and a predict that gives every result it can (damaged MNIST files and failed
downloads are in test_data.py). Item numbers are those of issue 22."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_tutorial import checkpoint as ckpt
from alexnet_tutorial import cli
from alexnet_tutorial.checkpoint import CheckpointError, load_checkpoint, load_model
from alexnet_tutorial.images import MAX_PIXELS, ImageError, load_image, predict_files, prepare

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message, message
    return message


# --- checkpoints: field by field (item 8), not a checkpoint versus code (item 9) -------------

def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    status = cli.main([str(a) for a in argv], out, err)
    return status, out.getvalue(), err.getvalue()


def edited(tmp_path: Path, state: dict, edit, name: str = "edited.pt") -> Path:
    """A copy of checkpoint ``state`` changed by ``edit`` (a function of a deep copy), as a file."""
    state = copy.deepcopy(state)
    edit(state)
    path = tmp_path / name
    torch.save(state, path)
    return path


@pytest.fixture
def good_state(seeded_model, make_checkpoint, tmp_path):
    """A checkpoint as today's code writes it, a quarter wide, one epoch into its run, as a dict."""
    record = {"epoch": 1, "train_loss": 0.5, "test_loss": 0.2, "test_accuracy": 0.93, "seconds": 1.0,
              "images_per_s": 64.0}
    path = make_checkpoint(seeded_model(width_mult=0.25), tmp_path / "good.pt", epoch=1, step=0, history=[record])
    return torch.load(path, weights_only=True)


def set_field(dotted: str, value):
    """An edit setting ``a.b`` (or deleting it when ``value`` is DELETE)."""

    def edit(state):
        *parents, last = ["model", dotted[6:]] if dotted.startswith("model.") else dotted.split(".")  # fc3.bias
        target = state
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value

    return edit


DELETE = object()
# (the field edited, its new value, a fragment the one-line message must hold)
EDITS = [
    ("step", DELETE, "incomplete (no step)"),
    ("running", DELETE, "incomplete (no running)"),
    ("running.count", DELETE, "incomplete (no running.count)"),
    ("running.count", "12", "running.count of the wrong type: expected a whole number, got str"),
    ("running.loss_sum", None, "running.loss_sum of the wrong type"),
    ("history", [1, 2], "history[0] of the wrong type: expected a dict, got int"),
    ("history", "epoch 1", "history of the wrong type: expected a list, got str"),
    ("history.0.test_accuracy", DELETE, "incomplete (no history[0].test_accuracy)"),
    ("history.0.test_accuracy", 93.0, "history[0].test_accuracy is 93.0, expected 0 to 1"),
    ("history.0.epoch", 0, "history[0].epoch is 0, expected 1 or more"),
    ("best", DELETE, "incomplete (no best)"),
    ("best.epoch", "1", "best.epoch of the wrong type"),
    ("best.accuracy", DELETE, "incomplete (no best.accuracy)"),
    ("step", -1, "step is -1, expected 0 or more"),
    ("epoch", 1.5, "epoch of the wrong type: expected a whole number, got float"),
    ("optimizer", DELETE, "incomplete (no optimizer)"),
    ("optimizer.param_groups", DELETE, "incomplete (no optimizer.param_groups)"),
    ("optimizer.state", [], "optimizer.state of the wrong type"),
    ("scaler", [0.1], "scaler of the wrong type: expected a dict, got list"),
    ("scaler", 2.0, "scaler of the wrong type"),
    ("rng", DELETE, "incomplete (no rng)"),
    ("rng.torch", DELETE, "incomplete (no rng.torch)"),
    ("rng.torch", torch.zeros(3), "rng.torch of the wrong type: expected a uint8 tensor"),
    ("config", [], "config of the wrong type"),
    ("config.dropout", "half", "config.dropout of the wrong type"),
    ("width_mult", float("inf"), "width_mult is inf, expected a finite number above 0"),
    ("width_mult", float("nan"), "width_mult is nan"),
    ("width_mult", -0.25, "width_mult is -0.25"),
    ("run_id", 7, "run_id of the wrong type: expected a string, got int"),
    ("run_id", DELETE, "incomplete (no run_id)"),
    ("device", ["cpu"], "device of the wrong type"),
    ("model.fc3.bias", [0.0] * 10, "model.fc3.bias of the wrong type: expected a tensor, got list"),
    ("version", 0, "version is 0"),
]


@pytest.mark.parametrize("field, value, fragment", EDITS, ids=[f"{f} {'deleted' if v is DELETE else repr(v)[:20]}"
                                                                for f, v, _ in EDITS])
def test_an_edited_checkpoint_is_refused_naming_the_file_and_the_field(good_state, tmp_path, field, value,
                                                                       fragment):
    path = edited(tmp_path, good_state, set_field(field, value))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = one_line(info.value)
    assert message.startswith(f"{path}: ") and fragment in message


@pytest.mark.parametrize("field, value, fragment", [
    ("step", DELETE, "no step"), ("running", DELETE, "no running"), ("history", [3, 4], "history[0]"),
    ("width_mult", float("inf"), "width_mult is inf"),
])
def test_resuming_or_evaluating_an_edited_checkpoint_gives_one_line(good_state, tmp_path, data_dir, field, value,
                                                                    fragment):
    path = edited(tmp_path, good_state, set_field(field, value))
    for argv in (["train", "--resume", path, "--epochs", "2", "--data-dir", data_dir, "--no-progress"],
                 ["evaluate", path, "--data-dir", data_dir, "--device", "cpu"]):
        status, out, err = run_cli(argv)
        assert status == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert str(path) in err and fragment in err


def test_a_version_1_checkpoint_still_loads(good_state, tmp_path):
    def as_version_1(state):  # version 1 had no run id, device or precision
        state["version"] = 1
        for key in ("run_id", "device", "precision"):
            del state[key]

    path = edited(tmp_path, good_state, as_version_1)
    assert load_checkpoint(path)["epoch"] == 1
    model = load_model(path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in good_state["model"].items())


def test_a_checkpoint_written_today_loads(good_state, tmp_path):
    state = load_checkpoint(tmp_path / "good.pt")
    assert state["version"] == ckpt.VERSION and state["history"] == good_state["history"]


def test_a_width_mult_edited_far_from_the_weights_is_refused_before_any_allocation(good_state, tmp_path):
    path = edited(tmp_path, good_state, set_field("width_mult", 1e4))  # AlexNet at 1e4: about 1.5 PB of weights
    with pytest.raises(CheckpointError, match="do not fit") as info:
        load_model(path)
    assert str(path) in one_line(info.value)


@pytest.mark.parametrize("kind, content, name", [
    ("a PNG image", None, "digit.png"),
    ("a text file", b"epoch 1: accuracy 98%\n", "notes.txt"),
    ("the file is empty", b"", "empty.pt"),
    ("a Python pickle, not written by torch.save", pickle.dumps({"model": [1, 2]}), "plain.pkl"),
    ("a JPEG image", b"\xff\xd8\xff\xe0" + bytes(200), "photo.jpg"),
])
def test_a_file_that_is_no_checkpoint_is_not_said_to_hold_code(tmp_path, draw_digit, kind, content, name):
    path = tmp_path / name
    if content is None:
        draw_digit(text="3", size=(40, 48)).save(path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = one_line(info.value)
    assert message == f"{path}: not a PyTorch checkpoint ({kind})"
    assert "arbitrary code" not in message


def test_a_checkpoint_that_holds_code_is_still_called_so(tmp_path):
    path = tmp_path / "code.pt"
    torch.save({"format": ckpt.FORMAT, "loss": torch.nn.CrossEntropyLoss()}, path)  # what the original saved
    with pytest.raises(CheckpointError, match="pickled Python objects.*arbitrary code"):
        load_checkpoint(path)
    legacy = tmp_path / "legacy-code.pt"  # the format before PyTorch 1.6 is recognised as PyTorch's too
    torch.save({"loss": torch.nn.CrossEntropyLoss()}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="arbitrary code"):
        load_checkpoint(legacy)


def odd_pickle_protocol(tmp_path: Path) -> Path:
    """A file in torch's pre-1.6 format whose second pickle declares protocol 4: torch loads
    it, with a UserWarning on the way."""
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(2)}, buffer, _use_new_zipfile_serialization=False)
    content = bytearray(buffer.getvalue())
    assert content[15:17] == b"\x80\x02"
    content[16] = 4
    path = tmp_path / "odd.pt"
    path.write_bytes(bytes(content))
    return path


def test_no_library_warning_comes_before_the_one_line(tmp_path):
    path = odd_pickle_protocol(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="not an alexnet-tutorial checkpoint"):
            load_checkpoint(path)
    assert [str(w.message) for w in caught] == []
    proc = subprocess.run([sys.executable, "-m", "alexnet_tutorial", "evaluate", str(path)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("alexnet-tutorial") and "Warning" not in proc.stderr


# --- weights that are not finite (item 13) --------------------------------------------------

def test_nan_weights_are_refused_naming_the_file_and_the_tensor(good_state, tmp_path, draw_digit, data_dir):
    def poison(state):
        state["model"]["fc3.weight"][2, 5] = float("nan")

    path = edited(tmp_path, good_state, poison, "diverged.pt")
    with pytest.raises(CheckpointError, match="model.fc3.weight holds NaN or infinite values"):
        load_model(path)
    digit = tmp_path / "seven.png"
    draw_digit(text="7", size=(60, 80)).save(digit)
    for argv in (["predict", path, digit], ["evaluate", path, "--data-dir", data_dir, "--device", "cpu"]):
        status, out, err = run_cli(argv)
        assert status == 2 and out == "" and err.count("\n") == 1, (out, err)
        assert str(path) in err and "fc3.weight" in err and "nan%" not in err


# --- images: too large (item 9), non-finite and high-bit-depth pixels (item 13) --------------

def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` 8-bit gray pixels: all PIL reads to open it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side, size", [(30_000, "900,000,000 pixels"), (10_000, "10000x10000 pixels"),
                                        (7_000, "7000x7000 pixels")])
def test_a_huge_image_is_called_too_large_with_the_limit(tmp_path, side, size):
    # 30000: past PIL's own limit, which refuses to open it; 10000: past PIL's warning; 7000: past ours alone
    path = png_header_only(tmp_path / f"huge-{side}.png", side, side)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError) as info:
            load_image(path)
    message = one_line(info.value)
    assert message == f"{path}: image is too large ({size}; at most {MAX_PIXELS:,} pixels are read)"
    assert [str(w.message) for w in caught] == []  # no DecompressionBombWarning before the line


def float_tiff(path: Path, values: np.ndarray) -> Path:
    Image.fromarray(values.astype(np.float32)).save(path)
    assert Image.open(path).mode == "F"
    return path


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_a_float_image_with_a_non_finite_pixel_is_refused(draw_digit, tmp_path, bad):
    values = np.asarray(draw_digit(text="4", size=(60, 80)), dtype=np.float32) / 255
    values[30, 20] = bad
    path = float_tiff(tmp_path / "scan.tif", values)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert one_line(info.value) == (f"{path}: some pixels are not finite numbers (NaN or infinity); "
                                    "no digit can be read from them")


def test_twelve_bit_data_in_a_sixteen_bit_file_reads_like_the_eight_bit_image(draw_digit, tmp_path):
    eight = draw_digit(text="2", size=(120, 140))
    eight.save(tmp_path / "eight.png")
    twelve = (np.asarray(eight, dtype=np.int64) * 4095 // 255).astype(np.uint16)  # 0..4095, as a 12-bit sensor
    Image.fromarray(twelve).save(tmp_path / "twelve.png")
    assert Image.open(tmp_path / "twelve.png").mode in ("I", "I;16")  # Pillow 10.1 reads 16-bit PNG as "I"
    gray8, gray12 = load_image(tmp_path / "eight.png"), load_image(tmp_path / "twelve.png")
    np.testing.assert_allclose(gray12, gray8, atol=1 / 255)
    np.testing.assert_allclose(prepare(gray12).digit, prepare(gray8).digit, atol=0.02)


def test_a_float_image_is_scaled_by_its_own_range(draw_digit, tmp_path):
    eight = draw_digit(text="5", size=(90, 100))
    values = np.asarray(eight, dtype=np.float32) / 255
    path = float_tiff(tmp_path / "radiance.tif", 1000.0 + 3.5 * values)  # any range, e.g. physical units
    np.testing.assert_allclose(load_image(path), values, atol=1e-5)
    flat = float_tiff(tmp_path / "flat.tif", np.full((40, 40), 7.25))
    with pytest.raises(ImageError, match="almost uniform"):
        prepare(load_image(flat), str(flat))


# --- predict with some images that cannot be read (item 12) ---------------------------------

@pytest.fixture
def mixed_images(tmp_path, draw_digit, seeded_model, make_checkpoint):
    """A checkpoint, and three good digit images with two bad files between them."""
    model_path = make_checkpoint(seeded_model(width_mult=0.25), tmp_path / "model.pt")
    good = []
    for text in "371":
        path = tmp_path / f"digit-{text}.png"
        draw_digit(text=text, size=(60, 80)).save(path)
        good.append(path)
    notes = tmp_path / "notes.png"
    notes.write_text("not an image\n")
    missing = tmp_path / "missing.png"
    return model_path, [good[0], notes, good[1], missing, good[2]], good, [notes, missing]


def test_predict_prints_every_result_it_can_and_one_line_per_failure(mixed_images):
    model_path, images, good, bad = mixed_images
    status, out, err = run_cli(["predict", model_path, *images, "--device", "cpu"])
    assert status == 2
    assert [line.split(":")[0] for line in out.splitlines()] == [str(p) for p in good]
    assert all("top 3" in line for line in out.splitlines())
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("alexnet-tutorial: error: ") for line in lines)
    assert str(bad[0]) in lines[0] and "not an image" in lines[0]
    assert str(bad[1]) in lines[1] and "no such file" in lines[1]


def test_predict_json_holds_the_failures_in_place(mixed_images):
    model_path, images, good, bad = mixed_images
    status, out, err = run_cli(["predict", model_path, *images, "--device", "cpu", "--json"])
    assert status == 2 and len(err.splitlines()) == 2
    results = json.loads(out)
    assert [r["image"] for r in results] == [str(p) for p in images]
    for result in results:
        if result["image"] in map(str, bad):
            assert set(result) == {"image", "error"} and result["image"] in result["error"]
        else:
            assert "error" not in result and 0 <= result["digit"] <= 9 and len(result["top3"]) == 3


def test_predict_files_reports_in_place_or_raises(mixed_images, seeded_model):
    _model_path, images, good, bad = mixed_images
    model = seeded_model(width_mult=0.25)
    with pytest.raises(ImageError, match="notes.png"):
        predict_files(model, images)  # the default: the first bad file raises, as a library call expects
    results = predict_files(model, images, errors="report")
    alone = predict_files(model, good)
    assert [r for r in results if "error" not in r] == alone  # the bad files change nothing for the good
    assert [r["image"] for r in results if "error" in r] == [str(p) for p in bad]
