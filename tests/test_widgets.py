"""The pictures and widgets of chapters "The model" and "Predictions"."""

import pytest
import torch

from alexnet_tutorial import widgets as w
from alexnet_tutorial.model import AlexNet

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AlexNet(width_mult=0.25)


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(1)
    return torch.randn(12, 1, 28, 28), torch.arange(12) % 10


def parts(box):
    """(controls, caption, picture) of a viewer."""
    controls, caption, picture = box.children
    return controls.children, caption, picture


def test_filters_figure_shows_every_first_layer_filter():
    torch.manual_seed(0)
    fig = w.filters_figure(AlexNet())
    with_images = [ax for ax in fig.axes if ax.images]
    assert len(with_images) == 32
    assert all(ax.images[0].get_array().shape == (3, 3) for ax in with_images)
    assert w.to_png(fig).startswith(PNG)


def test_figures_have_an_opaque_background(model, data):
    images, labels = data
    figs = [w.filters_figure(model), w.feature_maps_figure(model, images[0], "layer3", labels[0]),
            w.probabilities_figure(torch.full((10,), 0.1), 3), w.probabilities_figure(torch.rand(10), 3, images[0])]
    for fig in figs:
        assert fig.get_facecolor()[3] == 1.0


def test_feature_maps_figure_rejects_an_unknown_layer(model, data):
    with pytest.raises(ValueError, match="layer must be one of"):
        w.feature_maps_figure(model, data[0][0], "fc1")


def test_feature_maps_match_the_layer_shapes(model, data):
    maps = w.feature_maps(model, data[0][:2])
    assert [tuple(m.shape[1:]) for m in maps.values()] == [(8, 14, 14), (16, 7, 7), (32, 7, 7), (64, 7, 7),
                                                          (64, 3, 3)]
    assert model.training  # put back in the mode it was in


def test_feature_map_viewer_follows_slider_and_dropdown(model, data):
    images, labels = data
    viewer = w.feature_map_viewer(model, images, labels)
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


def test_prediction_explorer_steps_through_a_choice(model, data):
    images, labels = data
    explorer = w.prediction_explorer(model, images, labels)
    (which, index), caption, picture = parts(explorer)
    assert bytes(picture.value).startswith(PNG) and caption.value.startswith(f"1 of {len(images)}:")
    first = picture.value
    index.value = 3
    assert picture.value != first and "test image 3," in caption.value

    which.value = 7  # the digit 7: image 7 only
    assert index.value == 0 and index.max == 0
    assert "test image 7," in caption.value and "true label <b>7</b>" in caption.value


def test_misclassified_only_shows_only_wrong_predictions(model, data):
    images, labels = data
    predicted = w.predict_probabilities(model, images).argmax(1)
    wrong = torch.nonzero(predicted != labels).flatten().tolist()
    assert wrong, "an untrained model gets some of these wrong"
    explorer = w.prediction_explorer(model, images, labels)
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
    right = w.predict_probabilities(model, images).argmax(1)  # labels it gets all right
    explorer = w.prediction_explorer(model, images, right)
    (which, index), caption, picture = parts(explorer)
    which.value = "wrong"
    assert index.disabled and "No image matches" in caption.value and bytes(picture.value) == b""
    which.value = "all"
    assert not index.disabled and bytes(picture.value).startswith(PNG)


def test_prediction_explorer_can_start_on_the_mistakes(model, data):
    images, labels = data
    wrong = (w.predict_probabilities(model, images).argmax(1) != labels).sum().item()
    explorer = w.prediction_explorer(model, images, labels, show="wrong")
    (which, index), caption, picture = parts(explorer)
    assert which.value == "wrong" and index.max == wrong - 1
    assert caption.value.startswith(f"1 of {wrong}:")
