"""The pictures and widgets of chapters "The model" and "Predictions"."""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from alexnet_tutorial import widgets as w
from alexnet_tutorial.images import predict_probabilities
from alexnet_tutorial.model import CONV_LAYERS, AlexNet, feature_maps
from alexnet_tutorial.plots import feature_maps_figure, filters_figure, to_png

# Saved pictures live in ipywidgets 8's Stack; on 7.x (Colab) the widgets are live only,
# which test_widgets.py tests under ipywidgets 7.7 in a subprocess.
needs_stack = pytest.mark.skipif(not hasattr(__import__("ipywidgets"), "Stack"),
                                 reason="saved pictures need ipywidgets 8 (Stack)")

PNG = b"\x89PNG"
ROOT = Path(__file__).resolve().parents[1]
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MAX_SAVED_STATE = 1_500_000  # bytes of saved widget state one page may carry


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AlexNet(width_mult=0.25)


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(1)
    return torch.randn(12, 1, 28, 28), torch.arange(12) % 10


def parts(box):
    """(controls, caption, picture) of a live viewer."""
    controls, caption, picture = box.children
    return controls.children, caption, picture


def linked(box, source, target):
    """Whether one of ``box.links`` ties ``source`` to ``target`` (each a (widget, trait) pair)."""
    return any(link.source == source and link.target == target for link in box.links)


def saved_pictures(stack):
    """(caption HTML, PNG bytes) of every child of a Stack of saved pictures."""
    return [(child.children[0].value, bytes(child.children[1].value)) for child in stack.children]


def test_filters_figure_shows_every_first_layer_filter():
    torch.manual_seed(0)
    fig = filters_figure(AlexNet())
    with_images = [ax for ax in fig.axes if ax.images]
    assert len(with_images) == 32
    assert all(ax.images[0].get_array().shape == (3, 3) for ax in with_images)
    assert to_png(fig).startswith(PNG)


def test_feature_maps_figure_rejects_an_unknown_layer(model, data):
    with pytest.raises(ValueError, match="layer must be one of"):
        feature_maps_figure(model, data[0][0], "fc1")


def test_feature_maps_match_the_layer_shapes(model, data):
    maps = feature_maps(model, data[0][:2])
    assert [tuple(m.shape[1:]) for m in maps.values()] == [(8, 14, 14), (16, 7, 7), (32, 7, 7), (64, 7, 7),
                                                          (64, 3, 3)]
    assert model.training  # put back in the mode it was in


def test_feature_map_viewer_follows_slider_and_dropdown(model, data):
    images, labels = data
    viewer = w.feature_map_viewer(model, images, labels, saved=[])
    (index, layer), caption, picture = parts(viewer)
    assert bytes(picture.value).startswith(PNG)
    assert list(layer.options) == ["layer1", "layer2", "layer3", "layer4", "layer5"]
    assert index.max == len(images) - 1
    first = picture.value
    index.value = 5
    assert picture.value != first
    assert f"true label <b>{int(labels[5])}</b>" in caption.value
    shown = picture.value
    layer.value = "layer4"
    assert picture.value != shown and "layer4" in caption.value


@needs_stack
def test_saved_feature_maps_follow_the_controls_in_the_browser(model, data):
    images, labels = data
    saved = [3, 7]
    viewer = w.feature_map_viewer(model, images, labels, saved=saved)
    (index, layer), by_layer = viewer.children[0].children, viewer.children[1]
    assert list(index.options) == [(str(i), n) for n, i in enumerate(saved)]  # reads out the test image's number
    assert linked(viewer, (layer, "index"), (by_layer, "selected_index"))
    assert len(by_layer.children) == len(CONV_LAYERS)
    pngs = set()
    for name, stack in zip(CONV_LAYERS, by_layer.children):
        assert linked(viewer, (index, "index"), (stack, "selected_index"))
        pictures = saved_pictures(stack)
        assert [f"Test image {i}, true label <b>{int(labels[i])}</b>, {name}" in text
                for (text, _), i in zip(pictures, saved)] == [True] * len(saved)
        pngs.update(png for _, png in pictures)
    assert len(pngs) == len(saved) * len(CONV_LAYERS)  # every layer of every image its own picture


@needs_stack
def test_feature_map_viewer_goes_live_on_the_first_change(model, data):
    images, labels = data
    viewer = w.feature_map_viewer(model, images, labels, saved=[4])
    links = list(viewer.links)
    index, layer = viewer.children[0].children
    layer.value = "layer2"  # the saved image 4, in layer2
    (index, layer), caption, picture = parts(viewer)
    assert index.max == len(images) - 1 and index.value == 4 and "Test image 4," in caption.value
    assert "layer2" in caption.value
    assert viewer.links == [] and all(link.comm is None for link in links)  # the browser's links are gone
    shown = picture.value
    index.value = 11  # an image that was not saved
    assert picture.value != shown and "Test image 11," in caption.value


def test_widgets_are_live_only_without_stack(model, data, monkeypatch):
    monkeypatch.setattr(w, "HAS_STACK", False)  # as on ipywidgets 7
    images, labels = data
    viewer, explorer = w.feature_map_viewer(model, images, labels), w.prediction_explorer(model, images, labels)
    for box, index in ((viewer, parts(viewer)[0][0]), (explorer, parts(explorer)[0][1])):
        picture = box.children[2]
        assert box.links == [] and bytes(picture.value).startswith(PNG)
        first = picture.value
        index.value = 1
        assert picture.value != first


@needs_stack
def test_a_viewer_shows_its_first_picture_where_widgets_cannot_show(model, data):
    images, labels = data
    for box in (w.feature_map_viewer(model, images, labels, saved=[5]),
                w.prediction_explorer(model, images, labels, saved=[2, 3])):
        bundle = box._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
        assert "\n" not in bundle["text/plain"] and "run this cell" in bundle["text/plain"]
        first = bytes(box.children[1].children[0].children[0].children[1].value)  # the first saved picture
        assert base64.b64decode(bundle["image/png"]) == first


def test_prediction_explorer_steps_through_a_choice(model, data):
    images, labels = data
    explorer = w.prediction_explorer(model, images, labels, saved=[])
    (which, index), caption, picture = parts(explorer)
    assert bytes(picture.value).startswith(PNG) and caption.value.startswith(f"1 of {len(images)}:")
    assert not index.readout  # the caption counts from 1; a readout from 0 beside it would contradict it
    first = picture.value
    index.value = 3
    assert picture.value != first and "test image 3," in caption.value

    which.value = 7  # the digit 7: image 7 only
    assert index.value == 0 and index.max == 0
    assert "test image 7," in caption.value and "true label <b>7</b>" in caption.value


def test_misclassified_only_shows_only_wrong_predictions(model, data):
    images, labels = data
    predicted = predict_probabilities(model, images).argmax(1)
    wrong = torch.nonzero(predicted != labels).flatten().tolist()
    assert wrong, "an untrained model gets some of these wrong"
    explorer = w.prediction_explorer(model, images, labels, saved=[])
    (which, index), caption, picture = parts(explorer)
    which.value = "wrong"
    assert index.max == len(wrong) - 1
    for step, i in enumerate(wrong):
        index.value = step
        assert f"test image {i}," in caption.value
        assert f"predicted <b>{int(predicted[i])}</b>" in caption.value
        assert int(predicted[i]) != int(labels[i])


def test_prediction_explorer_says_when_nothing_matches(model, data):
    images, labels = data
    right = predict_probabilities(model, images).argmax(1)  # labels it gets all right
    explorer = w.prediction_explorer(model, images, right, saved=[])
    (which, index), caption, picture = parts(explorer)
    which.value = "wrong"
    assert index.disabled and "No image matches" in caption.value and bytes(picture.value) == b""
    which.value = "all"
    assert not index.disabled and bytes(picture.value).startswith(PNG)


def test_prediction_explorer_can_start_on_the_mistakes(model, data):
    images, labels = data
    wrong = (predict_probabilities(model, images).argmax(1) != labels).sum().item()
    explorer = w.prediction_explorer(model, images, labels, show="wrong", saved=[])
    (which, index), caption, picture = parts(explorer)
    assert which.value == "wrong" and index.max == wrong - 1
    assert caption.value.startswith(f"1 of {wrong}:")


def test_saving_chooses_the_most_confident_mistakes_and_some_of_each_digit():
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])
    probs = torch.full((8, 10), 0.01)
    right = [0, 2, 3, 5, 6]
    for i in right:
        probs[i, labels[i]] = 0.9
    probs[1, 5], probs[4, 7], probs[7, 0] = 0.5, 0.9, 0.7  # three mistakes, by confidence 4, 7, 1
    assert w.chosen_for_saving(labels, probs, mistakes=2, per_digit=1) == [0, 2, 4, 5, 7]
    assert w.chosen_for_saving(labels, probs, mistakes=3, per_digit=2) == list(range(8))


@needs_stack
def test_saved_predictions_follow_each_choice_in_the_browser(model, data):
    images, labels = data
    probs = predict_probabilities(model, images)
    predicted = probs.argmax(1)
    saved = [1, 2, 5, 8, 11]
    explorer = w.prediction_explorer(model, images, labels, probabilities=probs, saved=saved)
    (which, slider_stack), picture_stack = explorer.children[0].children, explorer.children[1]
    assert linked(explorer, (which, "index"), (slider_stack, "selected_index"))
    assert linked(explorer, (which, "index"), (picture_stack, "selected_index"))
    for (_, choice), slider, stack in zip(w.CHOICES, slider_stack.children, picture_stack.children):
        expected = [i for i in saved if choice == "all" or (choice == "wrong" and predicted[i] != labels[i])
                    or labels[i] == choice]
        assert linked(explorer, (slider, "value"), (stack, "selected_index"))
        if not expected:
            assert slider.disabled and "No saved image" in stack.children[0].value
            continue
        assert slider.max == len(expected) - 1 and not slider.readout  # the caption counts
        captions = [text for text, png in saved_pictures(stack)]
        assert [f"test image {i}, true label <b>{int(labels[i])}</b>, predicted <b>{int(predicted[i])}</b>" in text
                for text, i in zip(captions, expected)] == [True] * len(expected)


@needs_stack
def test_prediction_explorer_goes_live_where_the_saved_one_was(model, data):
    images, labels = data
    probs = predict_probabilities(model, images)
    wrong = torch.nonzero(probs.argmax(1) != labels).flatten().tolist()
    assert len(wrong) >= 2, "an untrained model gets some of these wrong"
    explorer = w.prediction_explorer(model, images, labels, probabilities=probs, saved=[wrong[-1]])
    which = explorer.children[0].children[0]
    which.value = "wrong"  # the saved explorer shows its one saved mistake, wrong[-1]
    (which, index), caption, picture = parts(explorer)
    assert explorer.links == [] and index.max == len(wrong) - 1
    assert index.value == len(wrong) - 1 and f"test image {wrong[-1]}," in caption.value
    shown = picture.value
    index.value = 0
    assert picture.value != shown and f"test image {wrong[0]}," in caption.value


@pytest.mark.parametrize("chapter", ["03_model", "06_predictions"])
def test_committed_pages_carry_their_saved_pictures_in_little_space(chapter):
    nb = nbformat.read(ROOT / "book" / f"{chapter}.ipynb", as_version=4)
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    models = [m["model_name"] for m in state.values()]
    assert "StackModel" in models and "LinkModel" in models, f"{chapter} has no saved pictures: {set(models)}"
    assert len(json.dumps(state)) < MAX_SAVED_STATE


# -- ipywidgets 7 (Colab's): no Stack, so live only ---------------------------------------

IPYWIDGETS7_ENV = "ALEXNET_TUTORIAL_IPYWIDGETS7"
# ipywidgets 7 also imports ipython_genutils; the rest it needs (traitlets, ipykernel) is the venv's.
IPYWIDGETS7 = ["ipywidgets==7.7.*", "ipython_genutils==0.2.*"]
UNDER_IPYWIDGETS7 = r"""
import ipywidgets, torch
assert ipywidgets.__version__.startswith("7.7."), ipywidgets.__version__
from alexnet_tutorial import widgets as w
from alexnet_tutorial.model import AlexNet


assert not w.HAS_STACK
torch.manual_seed(0)
model, images, labels = AlexNet(width_mult=0.25), torch.randn(4, 1, 28, 28), torch.arange(4)
for box in (w.feature_map_viewer(model, images, labels), w.prediction_explorer(model, images, labels)):
    controls, caption, picture = box.children
    index = next(c for c in controls.children if isinstance(c, ipywidgets.IntSlider))
    first = bytes(picture.value)
    assert first.startswith(b"\x89PNG"), first[:8]
    index.value = 2
    assert bytes(picture.value) != first and "image 2," in caption.value, caption.value
    print(type(box).__name__, "responds:", caption.value)
"""


@pytest.fixture(scope="session")
def ipywidgets7(request, tmp_path_factory) -> Path:
    """A folder holding ipywidgets 7.7, to put first on PYTHONPATH: ``$ALEXNET_TUTORIAL_IPYWIDGETS7``
    when set, else one that pip installs into pytest's cache (or a temporary folder)."""
    given = os.environ.get(IPYWIDGETS7_ENV)
    if given:
        if not (Path(given) / "ipywidgets").is_dir():
            pytest.skip(f"{IPYWIDGETS7_ENV}={given} holds no ipywidgets")
        return Path(given)
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("ipywidgets7") if cache else tmp_path_factory.mktemp("ipywidgets7")
    if not all((folder / name).is_dir() for name in ("ipywidgets", "ipython_genutils")):
        result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--retries", "0",
                                 "--timeout", "30", "--target", str(folder), *IPYWIDGETS7],
                                capture_output=True, text=True)
        if result.returncode:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"could not install {' '.join(IPYWIDGETS7)} with pip: {last}")
    return folder


def test_widgets_work_live_on_ipywidgets_7(ipywidgets7):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ipywidgets7), str(ROOT)])}
    result = subprocess.run([sys.executable, "-c", UNDER_IPYWIDGETS7], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("responds:") == 2, result.stdout
