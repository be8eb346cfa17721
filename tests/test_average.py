"""The moving average of the weights (``TrainConfig.average``): its arithmetic, when the recipe
keeps one, and that a run evaluates, saves, hands out and resumes it."""

from __future__ import annotations

import pytest
import torch

from alexnet_tutorial import checkpoint as ckpt
from alexnet_tutorial import cli
from alexnet_tutorial.config import AUTO_FIELDS, AVERAGE_DECAY, ORIGINAL_RECIPE, TrainConfig, describe_recipe
from alexnet_tutorial.errors import CheckpointError, ConfigError
from alexnet_tutorial.model import AlexNet
from alexnet_tutorial.run import train
from alexnet_tutorial.training import WeightAverage, evaluate

quiet = dict(progress=False, log=lambda _msg: None)


def test_the_average_copies_the_first_weights_then_warms_up_to_its_decay():
    model = torch.nn.Linear(1, 1, bias=False)
    average = WeightAverage(model, decay=0.5)
    values = [1.0, 3.0, 5.0, 7.0]
    expected = None
    for n, value in enumerate(values):  # a "training step" sets the weight, then the average moves
        with torch.no_grad():
            model.weight.fill_(value)
        average.update()
        keep = min(0.5, (1 + n) / (10 + n)) if n else 0.0  # n updates so far; the first copies
        expected = value if expected is None else keep * expected + (1 - keep) * value
        assert average.module.weight.item() == pytest.approx(expected)
        assert average.updates == n + 1
    assert average.module is not model and model.weight.item() == values[-1]  # the weights are untouched
    assert average.decay_now() == pytest.approx(5 / 14)  # (1 + 4) / (10 + 4): still warming up
    for _ in range(4):
        average.update()
    assert average.decay_now() == 0.5  # (1 + 8) / (10 + 8): the decay is reached, and kept


def test_the_average_round_trips_through_its_state():
    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.9)
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        average.update()
    state = average.state_dict()
    again = WeightAverage(torch.nn.Linear(3, 2), decay=0.9)
    again.load_state_dict(state)
    assert again.updates == 3 and again.decay_now() == average.decay_now()
    assert all(torch.equal(a, b) for a, b in zip(again.module.state_dict().values(), state["model"].values()))


def test_a_checkpoint_keeps_a_copy_of_the_average_that_later_updates_do_not_change():
    model = AlexNet()
    average = WeightAverage(model, decay=0.9)
    average.update()
    cfg = TrainConfig(epochs=1, average=0.9).resolved(train_size=64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = ckpt.training_state(model, optimizer, None, cfg, epoch=0, step=1, history=[],
                                running={}, best={}, average=average)
    saved = {k: v.clone() for k, v in state["average"]["model"].items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update()  # the run goes on: the average moves, the checkpoint's copy must not
    assert state["average"]["updates"] == 1
    assert all(v.device.type == "cpu" for v in state["average"]["model"].values())
    assert all(torch.equal(saved[k], v) for k, v in state["average"]["model"].items())
    assert not torch.equal(saved["fc3.weight"], average.module.state_dict()["fc3.weight"])


@pytest.mark.parametrize("images, epochs, expected", [
    (60_000, 1, AVERAGE_DECAY),   # one epoch of the full set: where it was measured
    (60_000, 4, AVERAGE_DECAY),   # 240,000 images: still short of a full run
    (60_000, 5, 0.0),             # the full run was tuned without it
    (59_999, 1, 0.0),             # shorter runs were not measured with it
    (1_000, 8, 0.0),
])
def test_the_recipe_averages_runs_from_one_full_epoch_up_to_a_full_run(images, epochs, expected):
    subset = images if images < 60_000 else None
    assert TrainConfig(epochs=epochs, subset=subset).resolved().average == expected


def test_an_average_given_is_kept_and_the_log_says_which_the_run_has():
    assert TrainConfig(epochs=5, average=0.9).resolved().average == 0.9
    assert TrainConfig(epochs=1, average=0.0).resolved().average == 0.0
    one = TrainConfig(epochs=1)
    line = describe_recipe(one, one.resolved(), 60_000)
    assert "weights averaged (decay 0.99)" in line and "average chosen for 1 x 60,000" in line
    five = TrainConfig(epochs=5)
    line = describe_recipe(five, five.resolved(), 60_000)  # a run without one says nothing of it
    assert "averag" not in line and "shift chosen for 5 x 60,000" in line


@pytest.mark.parametrize("value", [1.0, -0.1, float("nan"), "high"])
def test_a_decay_out_of_range_is_refused_in_one_line(value, capsys):
    with pytest.raises(ConfigError, match="average must be a decay in"):
        TrainConfig(average=value)
    assert cli.main(["train", "--average", str(value)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alexnet-tutorial train: argument --average:") and "\n" not in err


@pytest.fixture
def averaged_run(tiny, tmp_path):
    """A run of 2 epochs of 8 steps that keeps an average of decay 0.9, with its checkpoint."""
    out = tmp_path / "run.pt"
    result = train(tiny(subset=256, epochs=2, average=0.9), out=out, **quiet)
    return result, out


def test_a_run_evaluates_saves_and_hands_out_the_average(averaged_run, test_split, weights_equal):
    from conftest import TINY_TEST_IMAGES

    result, out = averaged_run
    state = ckpt.load_checkpoint(out)
    assert state["version"] == ckpt.VERSION == 4 and state["config"]["average"] == 0.9
    assert state["average"]["updates"] == 16  # one update per step
    assert weights_equal(result.model.state_dict(), state["average"]["model"])
    assert not weights_equal(state["model"], state["average"]["model"])  # the training weights differ
    loaded = ckpt.load_model(out)  # what evaluate and predict use: the average
    assert weights_equal(loaded.state_dict(), state["average"]["model"])
    assert weights_equal(result.best_model().state_dict(),
                         ckpt.model_weights(ckpt.load_checkpoint(ckpt.best_path(out))))
    # The history's accuracy is the average's: evaluated again, the saved average gives it.
    images, labels = test_split
    small = [(images[:TINY_TEST_IMAGES], labels[:TINY_TEST_IMAGES])]  # the test set tiny runs evaluate on
    assert evaluate(loaded, small, "cpu")["accuracy"] == result.history[-1]["test_accuracy"]


def test_a_damaged_average_is_refused_naming_the_field(averaged_run, tmp_path):
    _, out = averaged_run
    state = ckpt.load_checkpoint(out)
    state["average"]["updates"] = "many"
    torch.save(state, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match=r"edited\.pt: checkpoint is damaged \(average\.updates of the wrong"):
        ckpt.load_checkpoint(tmp_path / "edited.pt")


def test_a_run_that_averages_but_whose_checkpoint_lost_the_average_is_refused_untouched(averaged_run, tmp_path):
    _, out = averaged_run
    state = ckpt.load_checkpoint(out)
    torch.save({**state, "average": None}, tmp_path / "edited.pt")
    before = (tmp_path / "edited.pt").read_bytes()
    with pytest.raises(CheckpointError, match=r"edited\.pt: checkpoint cannot be resumed: its run averages"):
        train({"epochs": 3}, resume=tmp_path / "edited.pt", **quiet)
    assert (tmp_path / "edited.pt").read_bytes() == before


def test_an_average_that_does_not_fit_the_model_is_refused_in_one_line(averaged_run, tmp_path):
    _, out = averaged_run
    state = ckpt.load_checkpoint(out)
    state["average"]["model"].pop("fc3.bias")  # a key the network has
    torch.save(state, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match=r"edited\.pt: the average's weights do not fit the model \(.*"
                                              r"fc3\.bias"):
        train({"epochs": 3}, resume=tmp_path / "edited.pt", **quiet)


def test_a_checkpoint_from_before_the_average_loads_and_resumes_without_one(tiny, tmp_path, weights_equal):
    out = tmp_path / "old.pt"
    train(tiny(epochs=1, average=0.0), out=out, **quiet)
    state = ckpt.load_checkpoint(out)
    config = {k: v for k, v in state["config"].items() if k != "average"}  # as format 3 wrote it
    old = {**{k: v for k, v in state.items() if k != "average"}, "version": 3, "config": config}
    torch.save(old, out)
    assert weights_equal(ckpt.load_model(out).state_dict(), state["model"])
    resumed = train({"epochs": 2}, resume=out, **quiet)
    assert resumed.config.average == 0.0 and ckpt.load_checkpoint(out)["average"] is None


def test_the_command_line_sets_the_average(tiny, tmp_path, data_dir):
    out = tmp_path / "cli.pt"
    args = ["train", "--subset", "128", "--epochs", "1", "--batch-size", "32", "--width-mult", "0.25",
            "--device", "cpu", "--data-dir", str(data_dir), "--average", "0.5", "--out", str(out), "--no-progress"]
    assert cli.main(args) == 0
    state = ckpt.load_checkpoint(out)
    assert state["config"]["average"] == 0.5 and state["average"]["updates"] == 4


def test_an_average_is_part_of_the_recipe_a_resumed_run_keeps(averaged_run, capsys):
    _, out = averaged_run
    assert cli.main(["train", "--resume", str(out), "--average", "0.5"]) == 2
    assert "--average 0.5 differs from 0.9" in capsys.readouterr().err


@pytest.mark.parametrize("images, epochs", [(2_560, 1), (60_000, 1), (60_000, 5)])
def test_the_original_recipe_fixes_every_automatic_setting_and_keeps_no_average(images, epochs):
    assert set(AUTO_FIELDS) <= set(ORIGINAL_RECIPE)  # no length of run changes the original's recipe
    cfg = TrainConfig(epochs=epochs, **ORIGINAL_RECIPE).resolved(train_size=images)
    assert cfg.average == 0.0
    assert all(getattr(cfg, name) == ORIGINAL_RECIPE[name] for name in AUTO_FIELDS)
