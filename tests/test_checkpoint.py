"""Checkpoints: exact round trips, safe loading (bug 10), clear refusals, atomic writes, and
files written by an earlier release."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from alexnet_tutorial import checkpoint as ckpt
from alexnet_tutorial import cli
from alexnet_tutorial.checkpoint import CheckpointError, best_path, load_checkpoint, load_model, load_weights
from alexnet_tutorial.model import AlexNet


class Payload:
    """Unpickling this runs code: it creates the file named in ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_round_trip_gives_identical_predictions(seeded_model, make_checkpoint, tmp_path):
    model = seeded_model(seed=3, width_mult=0.5).eval()
    path = make_checkpoint(model, tmp_path / "run.pt")
    loaded = load_model(path)
    assert isinstance(loaded, AlexNet) and not loaded.training and loaded.width_mult == 0.5
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_checkpoint_is_self_describing(seeded_model, make_checkpoint, tmp_path):
    record = {"epoch": 1, "train_loss": 1.5, "test_loss": 0.5, "test_accuracy": 0.9, "seconds": 2.0,
              "images_per_s": 100.0}
    path = make_checkpoint(seeded_model(width_mult=0.25), tmp_path / "run.pt", epoch=3, step=7, history=[record])
    state = load_checkpoint(path)
    assert state["format"] == ckpt.FORMAT and state["version"] == ckpt.VERSION
    assert state["arch"] == "AlexNet" and state["width_mult"] == 0.25
    assert (state["epoch"], state["step"]) == (3, 7)
    assert state["history"] == [record]
    assert state["config"]["width_mult"] == 0.25
    assert {"model", "optimizer", "rng", "running", "best", "run_id", "device", "precision"} <= set(state)
    assert "scheduler" not in state  # the learning rate is a function of the step: nothing to save


def test_whole_module_pickle_is_refused(seeded_model, tmp_path):
    # Bug 10: the original saved a whole object with torch.save(net, ...).
    path = tmp_path / "whole.pt"
    torch.save(seeded_model(width_mult=0.25), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "pickled Python objects" in str(info.value)


def test_pickled_object_is_refused_without_running_its_code(tmp_path):
    marker, path = tmp_path / "code-ran", tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "payload": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="arbitrary code") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.exists()


def bad_files(tmp_path: Path, good: Path) -> dict:
    data = good.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "header only": data[:64],
        "random bytes": os.urandom(4096),
        "empty": b"",
        "text": b"epoch 1: accuracy 98%\n",
    }
    paths = {}
    for name, content in files.items():
        path = tmp_path / f"{name.replace(' ', '-')}.pt"
        path.write_bytes(content)
        paths[name] = path
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    paths["a plain tensor"] = tensor
    state_dict = tmp_path / "state-dict.pt"
    torch.save(AlexNet(width_mult=0.25).state_dict(), state_dict)
    paths["a bare state_dict"] = state_dict
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    paths["a folder"] = folder
    paths["missing"] = tmp_path / "missing.pt"
    return paths


def test_damaged_or_foreign_files_each_give_checkpoint_error_naming_the_file(seeded_model, make_checkpoint,
                                                                             tmp_path):
    good = make_checkpoint(seeded_model(width_mult=0.25), tmp_path / "good.pt")
    for what, path in bad_files(tmp_path, good).items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message, what
        with pytest.raises(CheckpointError):
            load_model(path)


def test_incomplete_and_newer_checkpoints_are_refused(seeded_model, make_checkpoint, tmp_path):
    state = load_checkpoint(make_checkpoint(seeded_model(width_mult=0.25), tmp_path / "good.pt"))
    incomplete = tmp_path / "incomplete.pt"
    torch.save({k: v for k, v in state.items() if k != "model"}, incomplete)
    with pytest.raises(CheckpointError, match="incomplete .no model"):
        load_checkpoint(incomplete)
    newer = tmp_path / "newer.pt"
    torch.save({**state, "version": ckpt.VERSION + 1}, newer)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(newer)


@pytest.mark.parametrize("field, value", [
    ("version", "1"), ("model", [1, 2]), ("width_mult", "wide"), ("config", 3), ("history", {}), ("epoch", None),
])
def test_fields_of_the_wrong_type_are_refused(seeded_model, make_checkpoint, tmp_path, field, value):
    state = load_checkpoint(make_checkpoint(seeded_model(width_mult=0.25), tmp_path / "good.pt"))
    path = tmp_path / "edited.pt"
    torch.save({**state, field: value}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(path) in str(info.value) and f"{field} of the wrong type" in str(info.value)


def test_missing_weights_are_named(seeded_model, make_checkpoint, tmp_path):
    state = load_checkpoint(make_checkpoint(seeded_model(width_mult=0.25), tmp_path / "good.pt"))
    del state["model"]["fc3.bias"]
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and "do not fit" in message and "fc3.bias" in message and "\n" not in message


def test_other_width_is_refused_with_a_clear_message(seeded_model, make_checkpoint, tmp_path):
    path = make_checkpoint(seeded_model(width_mult=0.5), tmp_path / "half.pt")
    model = seeded_model(width_mult=1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_weights(model, path)
    assert str(path) in str(info.value)
    assert "width_mult=0.5" in str(info.value) and "width_mult=1" in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert load_model(path).width_mult == 0.5  # load_model builds the width the file was made for


def test_weights_that_do_not_fit_are_refused(seeded_model, make_checkpoint, tmp_path):
    state = load_checkpoint(make_checkpoint(seeded_model(width_mult=0.25), tmp_path / "good.pt"))
    state["model"]["fc3.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_weights(AlexNet(width_mult=0.25), state, "edited.pt")


def test_save_is_atomic(seeded_model, make_checkpoint, tmp_path, monkeypatch):
    path = make_checkpoint(seeded_model(seed=1, width_mult=0.25), tmp_path / "run.pt")
    old_bytes = path.read_bytes()

    def crash_half_way(obj, f, *args, **kwargs):
        f.write(old_bytes[:1000])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(OSError, match="No space left"):
        make_checkpoint(seeded_model(seed=2, width_mult=0.25), path)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # no temporary file left behind
    load_checkpoint(path)


def test_save_replaces_the_file_and_leaves_nothing_else(seeded_model, make_checkpoint, tmp_path):
    path = make_checkpoint(seeded_model(seed=1, width_mult=0.25), tmp_path / "run.pt")
    first = path.read_bytes()
    make_checkpoint(seeded_model(seed=2, width_mult=0.25), path)
    assert path.read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def test_best_path_sits_beside_the_checkpoint(tmp_path):
    assert best_path(tmp_path / "run.pt") == tmp_path / "run.best.pt"
    assert best_path("alexnet.pt") == Path("alexnet.best.pt")
    assert best_path(tmp_path / "run") == tmp_path / "run.best.pt"


# --- a checkpoint written by 0.1.0 (format 2) ----------------------------------------------------

# tests/fixtures/README.md: an eighth-width network, one epoch of 2 steps on 64 images;
# its log said test accuracy 16.20%, test loss 2.3484.
RELEASE_0_1_0 = Path(__file__).parent / "fixtures" / "checkpoint-0.1.0.pt"


def test_a_0_1_0_checkpoint_is_evaluated_as_it_was_when_written(data_dir, capsys):
    state = load_checkpoint(RELEASE_0_1_0)
    assert state["version"] == 2 and "scheduler" in state  # the older format, scheduler state and all
    assert cli.main(["evaluate", str(RELEASE_0_1_0), "--device", "cpu", "--data-dir", str(data_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["count"], result["correct"], result["accuracy"]) == (10_000, 1620, 0.162)
    assert result["loss"] == pytest.approx(2.3484, abs=1e-4)


def test_a_0_1_0_checkpoint_predicts(draw_digit, tmp_path, capsys):
    image = tmp_path / "seven.png"
    draw_digit("7", size=(90, 120)).save(image)
    assert cli.main(["predict", str(RELEASE_0_1_0), str(image), "--device", "cpu", "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["image"] == str(image) and 0 <= result["digit"] <= 9 and len(result["top3"]) == 3
    model = load_model(RELEASE_0_1_0)
    assert model.width_mult == 0.125 and not model.training


def test_a_0_1_0_checkpoint_resumes_to_a_longer_run(data_dir, small_test_set, tmp_path, capsys):
    copy = tmp_path / "old.pt"
    shutil.copy(RELEASE_0_1_0, copy)
    old = load_checkpoint(copy)
    assert cli.main(["train", "--resume", str(copy), "--epochs", "2", "--device", "cpu", "--precision", "fp32",
                     "--data-dir", str(data_dir), "--no-progress"]) == 0
    assert "started for 1 epochs and now runs to 2" in capsys.readouterr().out
    new = load_checkpoint(copy)
    assert (new["version"], new["epoch"], new["step"], new["run_id"]) == (ckpt.VERSION, 2, 0, old["run_id"])
    assert new["history"][0] == old["history"][0] and len(new["history"]) == 2
    assert {k: new["config"][k] for k in ("batch_size", "lr", "dropout", "subset", "width_mult")} == {
        k: old["config"][k] for k in ("batch_size", "lr", "dropout", "subset", "width_mult")}  # its own recipe
    assert not all(torch.equal(new["model"][k], v) for k, v in old["model"].items())  # it trained on


def test_a_channels_last_checkpoint_loads_to_the_same_predictions_as_by_hand(make_checkpoint, tmp_path):
    """Chapter 5 loads a network with load_model and again by hand with load_state_dict; a run
    trained in the channels_last layout saves its weights so, and both must predict alike."""
    torch.manual_seed(0)
    model = AlexNet(width_mult=0.25).to(memory_format=torch.channels_last)
    path = make_checkpoint(model, tmp_path / "nhwc.pt")
    loaded = ckpt.load_model(path)
    by_hand = AlexNet(width_mult=0.25)
    by_hand.load_state_dict(ckpt.load_checkpoint(path)["model"])
    images = torch.randn(32, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(images), by_hand.eval()(images))
